#!/usr/bin/env bash
# The Python venv with pip torch that the reference scripts, the PyTorch side of the benchmarks and
# the trainer's libtorch use ($MIRAGE_CACHE/venv-torch). Prints its python path on its last line.
#
# open_clip and timm (the CLIP-family parity references) go on top with --no-deps, under their own
# stamp, so adding them never reinstalls torch and never lets pip move torch's version.
set -euo pipefail
here="$(dirname "$0")"
py=$("$here/venv.sh" torch "about 5 GB, a few minutes" \
  torch==2.13.0 torchvision==0.28.0 transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6 | tail -n1)
extra=(open_clip_torch==3.3.0 timm==1.0.31 ftfy==6.3.1 wcwidth==0.9.4)
stamp="$(dirname "$(dirname "$py")")/.mirage-extra-stamp"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${extra[*]}" ]]; then
  echo "venv-torch: adding ${extra[*]}" >&2
  "$py" -m pip install --quiet --disable-pip-version-check --no-deps "${extra[@]}" \
    || { echo "venv-torch: error: pip could not install ${extra[*]}" >&2; exit 1; }
  echo "${extra[*]}" >"$stamp"
fi
echo "$py"
