#!/usr/bin/env bash
# Rerank speed as users run it: `mirage serve --reranker` answering POST /v1/rerank over loopback
# HTTP, against transformers' BertForSequenceClassification in-process (PyTorch eager) on the same
# query–report pairs with the same thread count, in one run (scripts/bench/rerank_ref.py says how).
# The cross-encoder has the ms-marco-MiniLM-L-6-v2 shape with seeded random weights (no
# cross-encoder weights can be fetched here); the run also compares the two's scores.
#
#   scripts/bench-rerank.sh [THREADS] [ROUNDS]     (defaults: all cores, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-$(nproc)}"
rounds="${2:-3}"
source scripts/lib/bench-env.sh
scripts/fetch-assets.sh >&2
py=$(scripts/setup-python.sh | tail -n1)
cargo build --release -q -p mirage-cli --features qdrant --bin mirage
mirage="$target/release/mirage"
work="$cache/bench/rerank"
rm -rf "$work"
mkdir -p "$work"
source scripts/lib/bench-bundle.sh
bundle="$(bench_bundle "$mirage" "$cache" "$assets")"
"$py" scripts/bench/rerank_ref.py make "$work/hf" "$assets/minilm"
"$mirage" model import-reranker --hf "$work/hf" --out "$work/reranker" --model-id ms-marco-shape-random >&2

"$mirage" serve --bundle "$bundle" --store "embedded:$work/index" --host 127.0.0.1 --port 0 \
  --reranker "$work/reranker" --threads "$threads" --log-format json >"$work/serve.out" 2>"$work/serve.err" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 300); do
  url=$(sed -n 's/^listening on //p' "$work/serve.out" | head -n1)
  [[ -n "$url" ]] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$url" ]] || { echo "bench-rerank: the server did not start" >&2; exit 1; }
[[ "$url" == http* ]] || url="http://$url"
echo "threads: $threads (server: --threads; torch: set_num_threads), $rounds rounds, server at $url" >&2
OMP_NUM_THREADS=$threads "$py" scripts/bench/rerank_ref.py run "$work/hf" "$url" \
  "$assets/radlabels/synthetic_reports" "$threads" "$rounds" "$work/bench-rerank.json"
