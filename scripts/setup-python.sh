#!/usr/bin/env bash
# The Python venv with pip torch that the reference scripts, the PyTorch side of the benchmarks and
# the trainer's libtorch use ($MIRAGE_CACHE/venv-torch). Prints its python path on its last line.
set -euo pipefail
exec "$(dirname "$0")/venv.sh" torch "about 5 GB, a few minutes" \
  torch==2.13.0 torchvision==0.28.0 transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6
