#!/usr/bin/env bash
# CLIP encode throughput: a ViT-B/16 CLIP (open_clip's ViT-B-16-quickgelu, the OpenAI layout,
# random weights) imported with `mirage model import`, run by mirage's two engines, next to
# PyTorch open_clip (encode_text / encode_image) and Python onnxruntime on the bundle's own .onnx
# files, in one run with the same thread count and inputs (radlabels sentences ≤ 32 MiniLM tokens
# and whole reports, cut at CLIP's 77; random 224 px images). Contenders run interleaved for
# ROUNDS rounds and each cell is the best of its rounds (candle: first round only), as in
# scripts/bench-encode.sh.
#
#   scripts/bench-clip.sh [THREADS] [ROUNDS]     (defaults: 2 threads, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
rounds="${2:-3}"
scripts/fetch-assets.sh >/dev/null
py=$(scripts/setup-python.sh | tail -n1)
"$py" -c 'import onnxruntime' 2>/dev/null || "$py" -m pip install --quiet --disable-pip-version-check onnxruntime==1.28.0
export MIRAGE_ASSETS="${MIRAGE_ASSETS:-${MIRAGE_CACHE:-$HOME/.cache/mirage}/assets}"
assets="$MIRAGE_ASSETS"
golden=model/tests/golden/minilm_radlabels.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p mirage-model --example bench_encode
cargo build --release -q -p mirage-cli --bin mirage
bin="${CARGO_TARGET_DIR:-target}/release/examples/bench_encode"
mirage="${CARGO_TARGET_DIR:-target}/release/mirage"
echo "making a random open_clip ViT-B-16-quickgelu and importing it" >&2
"$py" scripts/bench/clip_ref.py make "$work/openclip"
"$mirage" model import --from "$work/openclip" --bpe-vocab "$assets/openclip/bpe_simple_vocab_16e6.txt.gz" \
  --out "$work/bundle" --model-id vit-b-16-random
rm -rf "$work/openclip"
echo "threads: $threads" >&2
source scripts/lib/bench-rounds.sh
# candle, the slow pure-Rust engine, runs in the first round only.
ours() {
  local engines=ort
  (($1 == 1)) && engines=ort,candle
  BENCH_ENGINES=$engines RAYON_NUM_THREADS=$threads "$bin" "$assets/minilm" "$golden" "$work" "$threads" >"$work/ours.$1"
}
onnx() { OMP_NUM_THREADS=$threads "$py" scripts/bench/encode_ref.py onnxruntime - "$work/bundle" "$work/inputs.json" "$threads" 2>/dev/null >"$work/onnx.$1"; }
torch() { OMP_NUM_THREADS=$threads "$py" scripts/bench/clip_ref.py torch "$work" "$work/inputs.json" "$threads" 2>/dev/null >"$work/torch.$1"; }
interleave "$rounds"
python3 scripts/bench/encode_table.py "$work" "$rounds" "PyTorch open_clip" "CLIP text" "ViT-B/16 224 px" "whole reports (77 tokens)"
