#!/usr/bin/env bash
# Training-step benchmark: MIRAGE vs the CLIP baseline (same towers, batch, inputs; queue off for
# CLIP) and tch vs the identical PyTorch step (same weights, inputs, batch and thread count), as
# ratios measured in one run. Defaults: MiniLM-L6 text + ResNet-18 attention pool at 128 px,
# batch 32, queue 4,096, 2 threads.
#
#   scripts/bench-train.sh [extra bench_step flags, e.g. --threads 1 --batch 64]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-assets.sh >/dev/null
source scripts/torch-env.sh
source scripts/lib/bench-env.sh
cargo run --release -q -p mirage-trainer --example bench_step -- \
  --text-init "$assets/minilm" --python "$MIRAGE_TORCH_PYTHON" "$@"
