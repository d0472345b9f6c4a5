#!/usr/bin/env bash
# Generates the PyTorch reference outputs of the vision towers (random torchvision weights are too
# large for git) into $MIRAGE_CACHE/parity, once per version of the generating script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
out="$cache/parity"
script="$here/reference/vision_reference.py"
stamp=$(sha256sum "$script" | cut -d' ' -f1)
if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp" ]]; then
  echo "reference-data: $out up to date"
  exit 0
fi
py=$("$here/setup-python.sh" | tail -n1)
rm -rf "$out"
"$py" "$script" "$out"
echo "$stamp" >"$out/.stamp"
