#!/usr/bin/env bash
# GPU smoke run for a lent CUDA machine: builds the trainer against CUDA libtorch and times 200
# bf16 training steps of ResNet-50 (attention pooling, 224 px) + MiniLM-L6 at batch 256 with a
# 65,536-row queue, printing samples/s and the peak GPU memory nvidia-smi saw.
#
# Needs on that machine: a Rust toolchain, the crates (vendored or reachable), the MiniLM assets
# (scripts/fetch-assets.sh) and a CUDA build of pip torch==2.13.0 (scripts/setup-python.sh
# installs the PyPI wheel, which is the CUDA one on x86-64 Linux).
#
#   scripts/gpu-smoke.sh [STEPS]      (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-200}"
source scripts/torch-env.sh
python - <<'PY'
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY
assets="${MIRAGE_ASSETS:-${MIRAGE_CACHE:-$HOME/.cache/mirage}/assets}"
cargo build --release -q -p mirage-trainer --example bench_step
bin="${CARGO_TARGET_DIR:-target}/release/examples/bench_step"
peak_file=$(mktemp)
( while sleep 0.5; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1; done ) >"$peak_file" 2>/dev/null &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT
"$bin" --text-init "$assets/minilm" --vision resnet50 --image-size 224 --embed-dim 768 \
  --batch 256 --queue 65536 --seq-len 77 --steps "$steps" --warmup 5 --threads 8 \
  --device cuda --precision bf16 --python ""
kill $sampler 2>/dev/null || true
echo "peak GPU memory (nvidia-smi, MiB): $(sort -n "$peak_file" | tail -n1)"
