#!/usr/bin/env bash
# The noise-robustness study (the paper's Fig. 6 on offline data): trains MIRAGE and the CLIP
# baseline at injected false-positive noise η ∈ {0, 0.2, 0.4, 0.6} with identical towers (MiniLM
# text init, ResNet-18 from the same seed), data (the MRI-atlas train split), steps and seeds, then
# fits each exported bundle's zero-shot temperature on the valid split (`mirage calibrate`),
# evaluates the calibrated bundle with `mirage eval` on the clean test split (per-query outcomes
# too), and writes a table with paired bootstrap differences to CLIP (study.md, study.json) and
# plots of metric vs η (study-*.png). The trainer validates on the valid split each epoch (metrics.jsonl); that is
# the only split knobs were chosen on.
#
#   scripts/noise-study.sh [--out DIR] [--seeds "0 1"] [--etas "0 0.2 0.4 0.6"] [--epochs N]
#                          [--set key=value ...]   (extra trainer settings for both methods)
#
# Runs are resumable: a finished run (its test report exists) is skipped, so re-running after an
# interruption continues where it stopped. Everything runs on CPU; README states the time.
set -euo pipefail
cd "$(dirname "$0")/.."

out=runs/noise-study
seeds="0 1"
etas="0 0.2 0.4 0.6"
epochs=""
extra=()
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --etas) etas="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --set) extra+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "noise-study: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$epochs" ]] && extra+=(--set "optim.epochs=$epochs")

export MIRAGE_CACHE="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MIRAGE_CACHE/target}"
scripts/fetch-assets.sh >/dev/null
source scripts/torch-env.sh
cargo build --quiet --locked -p mirage-server -p mirage-trainer
# Copies, so a rebuild while the study runs cannot change the programs halfway.
bin="$out/bin"
mkdir -p "$bin"
cp "$CARGO_TARGET_DIR/debug/mirage" "$CARGO_TARGET_DIR/debug/mirage-train" "$bin/"

data="$out/data"
if [[ ! -f "$data/dataset.json" ]]; then
  "$bin/mirage" data mri-atlas --out "$data"
fi

# CLIP = the same run with the robust and OT terms off and no balancing (no queue is built).
clip_settings=(--set loss.lambda_robust=0 --set loss.lambda_ot=0 --set loss.balance=none)

started=$SECONDS
for seed in $seeds; do
  for eta in $etas; do
    for method in mirage clip; do
      run="$out/$method-eta$eta-seed$seed"
      if [[ -f "$run/eval-test/report.json" ]]; then
        echo "noise-study: $run: done"
        continue
      fi
      echo "noise-study: $run: training ($(((SECONDS - started) / 60)) min so far)"
      settings=(--set "data.train=$data/train.jsonl" --set "data.valid=$data/valid.jsonl"
        --set "data.image_root=$data/images" --set "noise.fp_rate=$eta"
        --set "runtime.seed=$seed" --set "model.model_id=$method-atlas-eta$eta-seed$seed")
      [[ "$method" == clip ]] && settings+=("${clip_settings[@]}")
      rm -rf "$run"
      "$bin/mirage-train" train --config configs/study-atlas.toml --out "$run" --quiet \
        "${settings[@]}" "${extra[@]}" --export "$run/bundle" >"$run.log" 2>&1 ||
        { echo "noise-study: $run failed; see $run.log" >&2; tail -5 "$run.log" >&2; exit 1; }
      mv "$run.log" "$run/train.log"
      printf '{"method": "%s", "eta": %s, "seed": %s}\n' "$method" "$eta" "$seed" >"$run/run.json"
      # The zero-shot temperature is fitted on the valid split (never on test); the calibrated
      # copy is what gets evaluated, and its report still carries the raw (T = 1) ECE and NLL.
      "$bin/mirage" calibrate --bundle "$run/bundle" --data "$data" --split valid \
        --out "$run/bundle-calibrated" >"$run/calibration.json"
      # The eval noise rate and seed are fixed, so every bundle is scored on the same pairs.
      # Validation (for choosing knobs) is in the run's metrics.jsonl; test is only read here.
      "$bin/mirage" eval --bundle "$run/bundle-calibrated" --data "$data" --split test \
        --out "$run/eval-test" >/dev/null
    done
  done
done
"$bin/mirage" study-report --dir "$out"
echo "noise-study: finished in $(((SECONDS - started) / 60)) min; table: $out/study.md"
