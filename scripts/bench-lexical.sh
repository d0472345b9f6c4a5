#!/usr/bin/env bash
# Speed of lexical and hybrid search at 100k passages (radlabels report sentences recombined,
# embedding-like 384-d vectors), single-threaded, top 10: BM25 latency of the embedded store
# (SQLite FTS5) against rank_bm25 over the same terms in the same run, and dense, lexical and hybrid
# queries per second. Prints a table; JSON under $MIRAGE_CACHE/bench/lexical/.
#
#   scripts/bench-lexical.sh [N]      (passages, default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
source scripts/lib/bench-env.sh
scripts/fetch-assets.sh >&2
cargo build --release -q -p mirage-index --example bench_lexical
python="$(scripts/venv.sh bm25 "a few seconds" rank-bm25==0.2.2 numpy==2.4.6 | tail -n1)"
out="$cache/bench/lexical"
rm -rf "$out"
mkdir -p "$out"
"$target/release/examples/bench_lexical" "$assets/radlabels" "$out" --n "$n" >"$out/ours-line.json"
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, set on some machines for old OpenBLAS builds, slow a
# current numpy: unset for the reference only.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$python" scripts/bench/bm25_speed.py "$out" >"$out/reference.json"
python3 - "$out/ours.json" "$out/reference.json" <<'PY'
import json, sys
ours, ref = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
m = ours["modes"]
print(f"{ours['passages']:,} passages, {ours['queries']} queries, 1 thread, top 10 with texts; build {ours['build_seconds']:.1f} s\n")
print("| search | QPS | p50 ms | p99 ms | vs rank_bm25 QPS |\n|---|---|---|---|---|")
print(f"| rank_bm25 (numpy) | {ref['qps']:.1f} | {ref['p50_ms']:.2f} | {ref['p99_ms']:.2f} | 1.00× |")
for mode in ("lexical", "dense", "hybrid"):
    r = m[mode]
    print(f"| {mode} | {r['qps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['qps'] / ref['qps']:.2f}× |")
print(f"\nhybrid / dense QPS: {m['hybrid']['qps'] / m['dense']['qps']:.2f}×")
PY
