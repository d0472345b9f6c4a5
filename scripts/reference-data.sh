#!/usr/bin/env bash
# Generates the PyTorch reference outputs of the vision towers (random torchvision weights are too
# large for git), of random BERT cross-encoders and of random CLIP-family models (a Hugging Face
# CLIPModel with CLIP's real tokenizer, open_clip's CLIP ViT, BiomedCLIP and PMC-CLIP layouts) into
# $MIRAGE_CACHE/parity, once per version of the generating scripts. The CLIP tokenizer is built
# from open_clip's vocabulary (scripts/fetch-assets.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
out="$cache/parity"
script="$here/reference/vision_reference.py"
cross="$here/reference/cross_encoder_reference.py"
clip="$here/reference/clip_reference.py"
assets="${MIRAGE_ASSETS:-$cache/assets}"
vocab="$assets/openclip/bpe_simple_vocab_16e6.txt.gz"
[[ -f "$vocab" ]] || "$here/fetch-assets.sh" openclip
stamp=$(cat "$script" "$cross" "$clip" "$here/../model/tests/fixtures/tiny_tokenizer.json" | sha256sum | cut -d' ' -f1)
if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp" ]]; then
  echo "reference-data: $out up to date"
  exit 0
fi
py=$("$here/setup-python.sh" | tail -n1)
rm -rf "$out"
"$py" "$script" "$out"
"$py" "$cross" "$out/cross_encoder"
"$py" "$clip" "$vocab" "$here/../model/tests/fixtures/tiny_tokenizer.json" "$out/clip"
echo "$stamp" >"$out/.stamp"
