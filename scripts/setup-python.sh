#!/usr/bin/env bash
# Creates (once) the Python venv with pip torch that the reference scripts, the PyTorch side of the
# benchmarks and the trainer's libtorch use. It lives in the cache, outside the clone, so repeated
# runs on one machine reuse it; a stamp of the pinned requirements decides whether to rebuild.
#
#   MIRAGE_CACHE  cache root (default ~/.cache/mirage); the venv is $MIRAGE_CACHE/venv-torch
# Prints the venv's python path on its last line.
set -euo pipefail

cache="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
venv="$cache/venv-torch"
python="${PYTHON:-python3}"
requirements=(torch==2.13.0 torchvision==0.28.0 transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6)
stamp="${requirements[*]}"

if [[ -f "$venv/.mirage-stamp" && "$(cat "$venv/.mirage-stamp")" == "$stamp" ]]; then
  echo "setup-python: $venv ready" >&2
else
  echo "setup-python: installing ${requirements[*]} into $venv (about 5 GB, a few minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv" || { echo "setup-python: error: '$python -m venv' failed (apt-get install python3-venv?)" >&2; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}" \
    || { echo "setup-python: error: pip could not install ${requirements[*]}" >&2; exit 1; }
  echo "$stamp" >"$venv/.mirage-stamp"
fi
echo "$venv/bin/python"
