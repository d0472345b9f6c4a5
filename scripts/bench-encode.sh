#!/usr/bin/env bash
# Encode throughput: mirage's two engines (ONNX Runtime, candle) next to Python onnxruntime on the
# same .onnx files and PyTorch eager, measured in one run with the same thread count and the same
# inputs (radlabels sentences ≤ 32 tokens and whole reports ≥ 100 tokens from the parity golden
# file; random 224 px images). Prints a table with the ratios (> 1 means mirage ort is faster).
# A shared machine's speed drifts by ±20 % over minutes, so the three ONNX Runtime/PyTorch
# contenders run interleaved for ROUNDS rounds and each cell is the best of its rounds
# (interference only ever slows a run down; candle, the slow pure-Rust engine, runs in the first
# round only).
#
#   scripts/bench-encode.sh [THREADS] [ROUNDS]     (defaults: all cores, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-$(nproc)}"
rounds="${2:-3}"
scripts/fetch-assets.sh >/dev/null
py=$(scripts/setup-python.sh | tail -n1)
# The Python onnxruntime reference: the same release as the library mirage loads.
"$py" -c 'import onnxruntime' 2>/dev/null || "$py" -m pip install --quiet --disable-pip-version-check onnxruntime==1.28.0
source scripts/lib/bench-env.sh
golden=model/tests/golden/minilm_radlabels.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p mirage-model --example bench_encode
bin="$target/release/examples/bench_encode"
echo "threads: $threads (ort: intra-op threads; candle: RAYON_NUM_THREADS; torch: set_num_threads)" >&2
source scripts/lib/bench-rounds.sh
# candle, the slow pure-Rust engine, runs in the first round only.
ours() {
  local engines=ort
  (($1 == 1)) && engines=ort,candle
  BENCH_ENGINES=$engines RAYON_NUM_THREADS=$threads "$bin" "$assets/minilm" "$golden" "$work" "$threads" >"$work/ours.$1"
}
onnx() { OMP_NUM_THREADS=$threads "$py" scripts/bench/encode_ref.py onnxruntime "$assets/minilm" "$work/bundle" "$work/inputs.json" "$threads" 2>/dev/null >"$work/onnx.$1"; }
torch() { OMP_NUM_THREADS=$threads "$py" scripts/bench/encode_ref.py torch "$assets/minilm" "$work/bundle" "$work/inputs.json" "$threads" 2>/dev/null >"$work/torch.$1"; }
interleave "$rounds"
python3 scripts/bench/encode_table.py "$work" "$rounds" "PyTorch eager" "MiniLM-L6" "ResNet-50 attnpool 224 px" "whole reports"
