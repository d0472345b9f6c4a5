#!/usr/bin/env bash
# Generates the PyTorch reference outputs of the vision towers (random torchvision weights are too
# large for git) and of random BERT cross-encoders (transformers) into $MIRAGE_CACHE/parity, once
# per version of the generating scripts.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
out="$cache/parity"
script="$here/reference/vision_reference.py"
cross="$here/reference/cross_encoder_reference.py"
stamp=$(cat "$script" "$cross" "$here/../model/tests/fixtures/tiny_tokenizer.json" | sha256sum | cut -d' ' -f1)
if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp" ]]; then
  echo "reference-data: $out up to date"
  exit 0
fi
py=$("$here/setup-python.sh" | tail -n1)
rm -rf "$out"
"$py" "$script" "$out"
"$py" "$cross" "$out/cross_encoder"
echo "$stamp" >"$out/.stamp"
