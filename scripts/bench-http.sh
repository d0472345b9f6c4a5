#!/usr/bin/env bash
# HTTP overhead benchmark: /v1/search (text query) and /v1/embeddings at concurrency 16 and 64 for
# 30 s each, over loopback HTTP and in-process on the same state, on the 1,000 radlabels reports:
# once with the MiniLM bundle (the real workload) and once with a tiny model (inference nearly
# free, so the table shows what HTTP itself costs). Prints tables; JSON in
# $MIRAGE_CACHE/bench/http-{minilm,tiny}/bench-http.json.
#
#   scripts/bench-http.sh [SECONDS]      (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
source scripts/lib/bench-env.sh
scripts/fetch-assets.sh >&2
cargo build --release -q -p mirage-cli --bin mirage
cargo build --release -q -p mirage-cli --example bench_http
source scripts/lib/bench-bundle.sh
bundle="$(bench_bundle "$target/release/mirage" "$cache" "$assets")"
"$target/release/examples/bench_http" "$bundle" "$assets/radlabels/synthetic_reports" \
  "$cache/bench/http-minilm" --seconds "$seconds" --concurrency 16,64
echo
echo "tiny model (HTTP overhead exposed):"
"$target/release/examples/bench_http" tiny "$assets/radlabels/synthetic_reports" \
  "$cache/bench/http-tiny" --seconds "$seconds" --concurrency 16,64
