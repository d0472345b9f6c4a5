#!/usr/bin/env bash
# The Python venv with hnswlib and faiss that the peer half of the ANN benchmark
# (scripts/bench/ann_peers.py) runs in ($MIRAGE_CACHE/venv-ann). Prints its python path on its
# last line. hnswlib 0.8.0 ships only as an sdist on PyPI, so pip compiles it (needs g++; pip
# fetches pybind11/setuptools for the isolated build itself).
set -euo pipefail
command -v g++ >/dev/null || echo "setup-ann-bench: warning: no g++ on PATH; hnswlib's sdist build will fail" >&2
exec "$(dirname "$0")/venv.sh" ann "hnswlib compiles, about a minute" \
  numpy==2.4.6 hnswlib==0.8.0 faiss-cpu==1.15.1
