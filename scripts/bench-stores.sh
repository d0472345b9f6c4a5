#!/usr/bin/env bash
# Store comparison on the 1,000 radlabels reports with the MiniLM bundle: indexing throughput
# (`mirage index build`, and POST /v1/collections/…/items through the HTTP service) and
# `/v1/search` requests/s, p50 and p99 over HTTP at concurrency 16, for the embedded store, one
# Qdrant node, and a 3-node Qdrant cluster on loopback (3 shards × replication factor 2), all
# started here from the shared Qdrant build (scripts/with-qdrant.sh --find) and stopped at the end.
# Prints a table; JSON under $MIRAGE_CACHE/bench/stores/.
#
#   scripts/bench-stores.sh [SECONDS]      (per search run, default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
source scripts/lib/bench-env.sh
tools="$(scripts/with-qdrant.sh --find)"
scripts/fetch-assets.sh >&2
cargo build --release -q -p mirage-cli --features qdrant --bin mirage
cargo build --release -q -p mirage-cli --features qdrant --example bench_http
mirage="$target/release/mirage"
source scripts/lib/bench-bundle.sh
bundle="$(bench_bundle "$mirage" "$cache" "$assets")"
work="$cache/bench/stores"
rm -rf "$work"
mkdir -p "$work"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
nodes=()
stop_all() { for d in "${nodes[@]}"; do "$tools/stop.sh" --dir "$d" >/dev/null 2>&1 || true; done; }
trap stop_all EXIT
# start NAME [BOOTSTRAP_P2P_PORT|first|-]: prints the gRPC port and the p2p port
start() {
  local dir="$work/qdrant-$1" http grpc p2p args=()
  http="$(free_port)"; grpc="$(free_port)"; p2p="$(free_port)"
  args=(--wait --dir "$dir" --http-port "$http" --grpc-port "$grpc")
  case "$2" in
    -) ;;
    first) args+=(--p2p-port "$p2p") ;;
    *) args+=(--p2p-port "$p2p" --bootstrap "http://127.0.0.1:$2") ;;
  esac
  "$tools/start.sh" "${args[@]}" >&2
  echo "$grpc $p2p $http"
}
read -r single_grpc _ _ < <(start single -)
nodes+=("$work/qdrant-single")
read -r c1_grpc c1_p2p c1_http < <(start c1 first)
nodes+=("$work/qdrant-c1")
start c2 "$c1_p2p" >/dev/null; nodes+=("$work/qdrant-c2")
start c3 "$c1_p2p" >/dev/null; nodes+=("$work/qdrant-c3")
for _ in $(seq 120); do
  peers="$(curl -sf "http://127.0.0.1:$c1_http/cluster" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["result"]["peers"]))' || echo 0)"
  [[ "$peers" == 3 ]] && break
  sleep 0.5
done
[[ "$peers" == 3 ]] || { echo "bench-stores: the cluster did not form" >&2; exit 1; }

"$mirage" data radlabels --radlabels "$assets/radlabels" --out "$work/radlabels.jsonl" >&2
rows=()
for store in embedded qdrant-1 qdrant-3x2; do
  case "$store" in
    embedded) spec="embedded:$work/indexes"; build_extra=(); create='{}' ;;
    qdrant-1) spec="qdrant:http://127.0.0.1:$single_grpc"; build_extra=(); create='{}' ;;
    qdrant-3x2) spec="qdrant:http://127.0.0.1:$c1_grpc"; build_extra=(--shards 3 --replicas 2)
      create='{"shard_number": 3, "replication_factor": 2}' ;;
  esac
  summary="$("$mirage" index build --bundle "$bundle" --corpus "$work/radlabels.jsonl" --format jsonl \
    --store "$spec" --collection radlabels "${build_extra[@]}" --progress quiet | tail -n 1)"
  build_ips="$(python3 -c "import json, sys; print('%.1f' % json.loads(sys.argv[1])['items_per_second'])" "$summary")"
  "$target/release/examples/bench_http" "$bundle" "$assets/radlabels/synthetic_reports" \
    "$work/http-$store" --seconds "$seconds" --concurrency 16 --store "$spec" --create "$create" \
    --search-only >/dev/null
  row="$(python3 - "$work/http-$store" "$store" "$build_ips" <<'PY'
import json, sys
d, store, build = sys.argv[1:]
idx = json.load(open(f"{d}/indexing.json"))
run = json.load(open(f"{d}/bench-http.json"))[0]["http"]
print(f"| {store} | {build} | {idx['items_per_second']:.1f} | {run['rps']:.1f} | {run['p50_ms']:.1f} | {run['p99_ms']:.1f} | {run['errors']} |")
PY
)"
  rows+=("$row")
  echo "$row" >&2
done
echo
echo "| store | index build items/s | HTTP upsert items/s | search req/s (c16) | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
