#!/usr/bin/env bash
# CLIP encode throughput: a ViT-B/16 CLIP (open_clip's ViT-B-16-quickgelu, the OpenAI layout,
# random weights) imported with `mirage model import`, run by mirage's two engines, next to
# PyTorch open_clip (encode_text / encode_image) and Python onnxruntime on the bundle's own .onnx
# files, in one run with the same thread count and inputs (radlabels sentences ≤ 32 MiniLM tokens
# and whole reports, cut at CLIP's 77; random 224 px images). Contenders run interleaved for
# ROUNDS rounds and each cell is the best of its rounds (candle: first round only), as in
# scripts/bench-encode.sh. A second table bounds what any fp32 engine can reach here: the model's
# matrix products alone, timed with PyTorch's GEMM kernels at their exact shapes (clip_ref.py
# ceiling), next to the best rounds of mirage ort and PyTorch.
#
# Then, end to end (HTTP=false skips it): `mirage serve` with the bundle answering
# POST /v1/embeddings with 8 PNG images or 8 reports per request, against PyTorch open_clip
# in-process from the same PNG bytes and texts (scripts/bench/clip_http.py).
#
#   scripts/bench-clip.sh [THREADS] [ROUNDS]     (defaults: 2 threads, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
rounds="${2:-3}"
scripts/fetch-assets.sh >/dev/null
py=$(scripts/setup-python.sh | tail -n1)
"$py" -c 'import onnxruntime' 2>/dev/null || "$py" -m pip install --quiet --disable-pip-version-check onnxruntime==1.28.0
# onnx writes the one-product graphs of the ceiling table.
"$py" -c 'import onnx' 2>/dev/null || "$py" -m pip install --quiet --disable-pip-version-check onnx==1.19.1
source scripts/lib/bench-env.sh
golden=model/tests/golden/minilm_radlabels.json
work=$(mktemp -d)
trap 'kill "${server:-}" 2>/dev/null; rm -rf "$work"' EXIT
cargo build --release -q -p mirage-model --example bench_encode
cargo build --release -q -p mirage-cli --bin mirage
bin="$target/release/examples/bench_encode"
mirage="$target/release/mirage"
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
echo
OMP_NUM_THREADS=$threads "$py" scripts/bench/clip_ref.py ceiling "$work" "$rounds" "$threads"

if [[ "${HTTP:-true}" == true ]]; then
  echo >&2
  echo "end to end: mirage serve over HTTP vs PyTorch open_clip in-process" >&2
  "$mirage" serve --bundle "$work/bundle" --host 127.0.0.1 --port 0 --threads "$threads" \
    --data-dir "$work/data" --store "embedded:$work/indexes" >"$work/serve.out" 2>"$work/serve.err" &
  server=$!
  url=""
  for _ in $(seq 1 600); do
    url=$(sed -n 's/^listening on //p' "$work/serve.out")
    [[ -n "$url" ]] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$url" ]] || { echo "mirage serve did not start" >&2; kill "$server"; exit 1; }
  "$py" scripts/bench/clip_http.py mirage "$url" "$work/inputs.json" >"$work/http.mirage"
  kill "$server"
  wait "$server" 2>/dev/null || true
  OMP_NUM_THREADS=$threads "$py" scripts/bench/clip_http.py torch - "$work/inputs.json" "$threads" 2>/dev/null >"$work/http.torch"
  python3 - "$work" <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
m, t = json.loads((w / "http.mirage").read_text()), json.loads((w / "http.torch").read_text())
print("| end to end, batch 8, one request at a time | unit | mirage serve (HTTP, JSON) | PyTorch open_clip (in-process) | mirage / PyTorch |")
print("| --- | --- | ---: | ---: | ---: |")
for key, name, unit in (("http_image_b8", "ViT-B/16, 256 px PNG bytes → embeddings", "images/s"),
                        ("http_text_reports_b8", "CLIP text, whole reports (77 tokens)", "texts/s")):
    print(f"| {name} | {unit} | {m[key]:.1f} | {t[key]:.1f} | {m[key] / t[key]:.2f} |")
PY
fi
