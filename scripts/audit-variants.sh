#!/usr/bin/env bash
# The matching score's variants (docs/METHOD.md §2.2: soft nearest neighbour with the learned σ_q,
# other σ_q, hard nearest neighbour), chosen on the valid split, then measured on the training
# corpus. For every MIRAGE run of a finished study: the held-out noise-detection AUC of s on the
# valid split (`mirage eval --split valid`, 40 % of its pairs given another caption, the same
# pairs for every variant) and the AUC of s and of cosine for the trainer's own injected swaps
# on the training corpus (`mirage audit --noise-log`). The variant with the best mean valid AUC
# is the choice; the test split is never read. Resumable: finished measurements are kept.
#
#   scripts/audit-variants.sh [--study DIR]   (default runs/study-eta04; writes DIR/audit-variants/)
set -euo pipefail
cd "$(dirname "$0")/.."
study=runs/study-eta04
while [[ $# -gt 0 ]]; do
  case "$1" in
    --study) study="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "audit-variants.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
data="$study/data"
[[ -f "$data/dataset.json" ]] ||
  { echo "audit-variants.sh: $study is not a finished study (no data/dataset.json)" >&2; exit 2; }
out="$study/audit-variants"
# This build's mirage (the variants' flags are newer than some studies), copied so that a rebuild
# cannot change it halfway.
export MIRAGE_CACHE="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MIRAGE_CACHE/target}"
source scripts/torch-env.sh
cargo build --quiet --locked -p mirage-cli
bin="$out/bin"
mkdir -p "$bin"
[[ -x "$bin/mirage" ]] || cp "$CARGO_TARGET_DIR/debug/mirage" "$bin/"

declare -A variants=(
  [learned]=""
  [hard]="--nn hard"
  [scale5]="--nn-scale 5"
  [scale30]="--nn-scale 30"
  [scale100]="--nn-scale 100"
)
started=$SECONDS
for run in "$study"/mirage-*/; do
  run=${run%/}
  name=$(basename "$run")
  [[ -f "$run/noise.jsonl" ]] || continue
  for v in "${!variants[@]}"; do
    dir="$out/$name/$v"
    # shellcheck disable=SC2086 # the variant's flags are words on purpose
    if [[ ! -f "$dir/valid/report.json" ]]; then
      "$bin/mirage" eval --bundle "$run/bundle" --data "$data" --split valid \
        --out "$dir/valid" ${variants[$v]} >/dev/null
    fi
    # shellcheck disable=SC2086
    if [[ ! -f "$dir/train/summary.json" ]]; then
      "$bin/mirage" audit --bundle "$run/bundle" --corpus "$data/train.jsonl" \
        --image-root "$data/images" --noise-log "$run/noise.jsonl" \
        --out "$dir/train" ${variants[$v]} >/dev/null
    fi
  done
  echo "audit-variants.sh: $name done ($(((SECONDS - started) / 60)) min)" >&2
done

python3 - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for d in sorted(p for p in out.glob("mirage-*/*") if (p / "train" / "summary.json").exists()):
    valid = json.loads((d / "valid" / "report.json").read_text())["noise_detection"]
    train = json.loads((d / "train" / "summary.json").read_text())
    r = rows.setdefault(d.name, {"valid": [], "valid_cos": [], "train_s": [], "train_cos": [], "scale": set()})
    r["valid"].append(valid["auc_s"])
    r["valid_cos"].append(valid["auc_cosine"])
    r["train_s"].append(train["injected"]["auc_s"])
    r["train_cos"].append(train["injected"]["auc_cosine"])
    r["scale"].add("hard" if train.get("nn_hard") else f"{train['nn_scale']:.1f}")
mean = statistics.mean
best = max(rows, key=lambda v: mean(rows[v]["valid"]))
lines = ["| variant | σ_q | runs | valid AUC of s (held-out swaps) | valid AUC of cosine | train-corpus AUC of s | train-corpus AUC of cosine |",
         "|---|---|---:|---:|---:|---:|---:|"]
for v, r in sorted(rows.items(), key=lambda kv: -mean(kv[1]["valid"])):
    mark = " (chosen on valid)" if v == best else ""
    lines.append(f"| {v}{mark} | {', '.join(sorted(r['scale']))} | {len(r['valid'])} | "
                 f"{mean(r['valid']):.3f} | {mean(r['valid_cos']):.3f} | {mean(r['train_s']):.3f} | "
                 f"{mean(r['train_cos']):.3f} |")
table = "\n".join(lines)
(out / "variants.md").write_text(table + "\n")
(out / "variants.json").write_text(json.dumps({"chosen": best, "variants": {
    v: {k: (sorted(x) if isinstance(x, set) else x) for k, x in r.items()} for v, r in rows.items()}}, indent=2))
print(table)
PY
