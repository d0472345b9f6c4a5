#!/usr/bin/env bash
# Creates (once) a Python venv of pinned requirements in the cache, outside the clone, so repeated
# runs on one machine reuse it; a stamp of the requirements decides whether to rebuild. Every venv
# of the project (torch, the ANN peers, the API fuzzer) is made here.
#
#   scripts/venv.sh NAME "WHAT IT COSTS" REQUIREMENT...
#   MIRAGE_CACHE  cache root (default ~/.cache/mirage); the venv is $MIRAGE_CACHE/venv-NAME
#   PYTHON        interpreter that creates the venv (default python3)
# Prints the venv's python path on its last line.
set -euo pipefail

if (($# < 3)); then
  echo "usage: scripts/venv.sh NAME \"WHAT IT COSTS\" REQUIREMENT..." >&2
  exit 2
fi
name=$1 cost=$2
shift 2
requirements=("$@")
cache="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
venv="$cache/venv-$name"
python="${PYTHON:-python3}"
stamp="${requirements[*]}"

if [[ -f "$venv/.mirage-stamp" && "$(cat "$venv/.mirage-stamp")" == "$stamp" ]]; then
  echo "venv-$name: $venv ready" >&2
else
  echo "venv-$name: installing ${requirements[*]} into $venv ($cost)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv" || { echo "venv-$name: error: '$python -m venv' failed (apt-get install python3-venv?)" >&2; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}" \
    || { echo "venv-$name: error: pip could not install ${requirements[*]}" >&2; exit 1; }
  # The stamp goes last, so an interrupted install is redone next time rather than trusted.
  echo "$stamp" >"$venv/.mirage-stamp"
fi
echo "$venv/bin/python"
