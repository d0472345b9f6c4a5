#!/usr/bin/env bash
# Encode throughput: our candle towers next to PyTorch CPU, measured in the same run with the same
# thread count and the same inputs (radlabels sentences from the parity golden file; random 224 px
# images). Prints a table with the ratio ours / PyTorch (> 1 means we are faster).
#
#   scripts/bench-encode.sh [THREADS]     (default: all cores)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-$(nproc)}"
scripts/fetch-assets.sh >/dev/null
py=$(scripts/setup-python.sh | tail -n1)
assets="${MIRAGE_ASSETS:-${MIRAGE_CACHE:-$HOME/.cache/mirage}/assets}"
golden=model/tests/golden/minilm_radlabels.json
cargo build --release -q -p mirage-model --example bench_encode
bin="${CARGO_TARGET_DIR:-target}/release/examples/bench_encode"
echo "threads: $threads (candle: RAYON_NUM_THREADS; torch: set_num_threads)" >&2
ours=$(RAYON_NUM_THREADS=$threads "$bin" "$assets/minilm" "$golden")
theirs=$(OMP_NUM_THREADS=$threads "$py" scripts/bench/encode_torch.py "$assets/minilm" "$golden" "$threads" 2>/dev/null)
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rows = [("text_b1", "MiniLM-L6 text, batch 1", "sentences/s"), ("text_b8", "MiniLM-L6 text, batch 8", "sentences/s"),
        ("text_b32", "MiniLM-L6 text, batch 32", "sentences/s"), ("image_b8", "ResNet-50 attnpool 224px, batch 8", "images/s")]
print(f"| workload | unit | mirage (candle) | PyTorch CPU | ratio |")
print(f"| --- | --- | ---: | ---: | ---: |")
for key, name, unit in rows:
    print(f"| {name} | {unit} | {ours[key]:.1f} | {theirs[key]:.1f} | {ours[key] / theirs[key]:.2f} |")
PY
