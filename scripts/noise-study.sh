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
#   scripts/noise-study.sh [--dataset atlas|digits] [--data-args "ARGS"] [--out DIR] [--seeds "0 1"]
#                          [--etas "0 0.2 0.4 0.6"] [--epochs N]
#                          [--set key=value ...]   (extra trainer settings for both methods;
#                                                   --set model.bundle=DIR starts both from an
#                                                   imported model, e.g. BiomedCLIP)
#
# --dataset digits runs the same study on the handwritten digits (`mirage data digits`,
# configs/study-digits.toml) instead of the MRI atlas. --data-args go to the dataset's builder
# (`mirage data mri-atlas --help`, `mirage data digits --help`), e.g. "--augment 5" for an atlas
# twice the default size. The dataset is written once per --out: a new --data-args needs a new --out.
#
# Runs are resumable: a finished run (its test report exists) is skipped, so re-running after an
# interruption continues where it stopped. Everything runs on CPU; README states the time.
set -euo pipefail
cd "$(dirname "$0")/.."

out=runs/noise-study
dataset=atlas
data_args=""
seeds="0 1"
etas="0 0.2 0.4 0.6"
epochs=""
extra=()
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --dataset) dataset="$2"; shift 2 ;;
    --data-args) data_args="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --etas) etas="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --set) extra+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "noise-study: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$epochs" ]] && extra+=(--set "optim.epochs=$epochs")

source scripts/lib/study.sh
# shellcheck disable=SC2086 # the builder's arguments are words
study_setup "$dataset" $data_args

# CLIP = the same run with the robust and OT terms off and no balancing (no queue is built).
clip_settings=(--set loss.lambda_robust=0 --set loss.lambda_ot=0 --set loss.balance=none)

started=$SECONDS
for seed in $seeds; do
  for eta in $etas; do
    for method in mirage clip; do
      settings=()
      [[ "$method" == clip ]] && settings+=("${clip_settings[@]}")
      study_run "$method-eta$eta-seed$seed" "$method" "$eta" "$seed" "${settings[@]}" "${extra[@]}"
    done
  done
done
"$bin/mirage" study-report --dir "$out"
echo "noise-study: finished in $(((SECONDS - started) / 60)) min; table: $out/study.md"
