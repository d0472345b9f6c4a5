# Shared by scripts/noise-study.sh and scripts/ablation.sh (sourced, not run): building the
# programs once, the study's dataset, and one resumable run (train → calibrate on valid → eval
# on test). Expects `out` to be set; defines `bin`, `data` and `config`.

# study_setup [atlas|digits [BUILDER-ARG ...]]: builds mirage and mirage-train and copies them
# under $out/bin (a rebuild while a study runs cannot change the programs halfway), and writes the
# dataset under $out/data once: the MRI atlas (`mirage data mri-atlas`, configs/study-atlas.toml)
# or the handwritten digits (`mirage data digits`, configs/study-digits.toml), the builder given
# the extra arguments (e.g. `--augment 5` for a larger atlas).
study_setup() {
  local dataset=${1:-atlas}
  local builder_args=("${@:2}")
  case "$dataset" in
    atlas) config=configs/study-atlas.toml ;;
    digits) config=configs/study-digits.toml ;;
    *) echo "$(basename "$0"): unknown dataset $dataset (atlas or digits)" >&2; exit 2 ;;
  esac
  export MIRAGE_CACHE="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MIRAGE_CACHE/target}"
  scripts/fetch-assets.sh >/dev/null
  source scripts/torch-env.sh
  cargo build --quiet --locked -p mirage-cli -p mirage-trainer
  bin="$out/bin"
  mkdir -p "$bin"
  cp "$CARGO_TARGET_DIR/debug/mirage" "$CARGO_TARGET_DIR/debug/mirage-train" "$bin/"
  data="$out/data"
  if [[ -f "$data/dataset.json" ]]; then
    return
  fi
  case "$dataset" in
    atlas) "$bin/mirage" data mri-atlas --out "$data" "${builder_args[@]}" ;;
    digits) "$bin/mirage" data digits --out "$data" "${builder_args[@]}" ;;
  esac
}

# study_run NAME METHOD ETA SEED [--set key=value ...]: trains $out/NAME with
# $config at noise ETA and SEED (plus the settings), fits the zero-shot
# temperature on the valid split, evaluates the calibrated bundle on the clean test split (report
# and per-query outcomes), and audits the training corpus with its noise log. Skipped when its
# test report exists.
study_run() {
  local name=$1 method=$2 eta=$3 seed=$4
  shift 4
  local run="$out/$name"
  if [[ -f "$run/eval-test/report.json" ]]; then
    echo "$(basename "$0"): $run: done"
    return
  fi
  echo "$(basename "$0"): $run: training ($(((SECONDS - started) / 60)) min so far)"
  rm -rf "$run"
  "$bin/mirage-train" train --config "$config" --out "$run" --quiet \
    --set "data.train=$data/train.jsonl" --set "data.valid=$data/valid.jsonl" \
    --set "data.image_root=$data/images" --set "noise.fp_rate=$eta" \
    --set "runtime.seed=$seed" --set "model.model_id=$name" \
    "$@" --export "$run/bundle" >"$run.log" 2>&1 ||
    { echo "$(basename "$0"): $run failed; see $run.log" >&2; tail -5 "$run.log" >&2; exit 1; }
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
  # The training corpus as the model saw it (its injected swaps applied), scored with s and
  # cosine by the final model: the audit setting the method is for. Bundles without a bank (CLIP)
  # score s against the training captions re-encoded.
  if [[ -f "$run/noise.jsonl" ]]; then
    local bank=bundle
    [[ -f "$run/bundle/text_bank.safetensors" ]] || bank=corpus
    "$bin/mirage" audit --bundle "$run/bundle" --corpus "$data/train.jsonl" \
      --image-root "$data/images" --noise-log "$run/noise.jsonl" --bank "$bank" \
      --out "$run/audit-train" >/dev/null
  fi
}
