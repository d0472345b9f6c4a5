#!/usr/bin/env bash
# Creates (once) the Python venv with hnswlib and faiss that the peer half of the ANN benchmark
# (scripts/bench/ann_peers.py) runs in. It lives in the cache, outside the clone, so repeated runs
# on one machine reuse it; a stamp of the pinned requirements decides whether to rebuild.
#
#   MIRAGE_CACHE  cache root (default ~/.cache/mirage); the venv is $MIRAGE_CACHE/venv-ann
#   PYTHON        interpreter that creates the venv (default python3)
# hnswlib 0.8.0 ships only as an sdist on PyPI, so pip compiles it (needs g++; pip fetches
# pybind11/setuptools for the isolated build itself). Prints the venv's python path on its last line.
set -euo pipefail

cache="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
venv="$cache/venv-ann"
python="${PYTHON:-python3}"
requirements=(numpy==2.4.6 hnswlib==0.8.0 faiss-cpu==1.15.1)
stamp="${requirements[*]}"

if [[ -f "$venv/.mirage-stamp" && "$(cat "$venv/.mirage-stamp")" == "$stamp" ]]; then
  echo "setup-ann-bench: $venv ready" >&2
else
  echo "setup-ann-bench: installing ${requirements[*]} into $venv (hnswlib compiles, about a minute)" >&2
  command -v g++ >/dev/null || echo "setup-ann-bench: warning: no g++ on PATH; hnswlib's sdist build will fail" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv" || { echo "setup-ann-bench: error: '$python -m venv' failed (apt-get install python3-venv?)" >&2; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}" \
    || { echo "setup-ann-bench: error: pip could not install ${requirements[*]}" >&2; exit 1; }
  # The stamp goes last, so an interrupted install is redone next time rather than trusted.
  echo "$stamp" >"$venv/.mirage-stamp"
fi
echo "$venv/bin/python"
