#!/usr/bin/env bash
# Snapshot benchmark, as a user runs it: `mirage index snapshot` and `mirage index restore` of an
# embedded collection of N items (seeded 384-d embedding-like vectors, a one-line report text and
# a small payload each, imported with `mirage index build --format npy`), next to the offline
# reference a user would otherwise script: `tar cf` of the stopped collection's folder, then
# `sha256sum` of the archive. Prints sizes, times, and ours / reference (< 1: we are faster).
#
#   scripts/bench-snapshot.sh [N]      (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
source scripts/lib/bench-env.sh
py=$(scripts/setup-ann-bench.sh | tail -n1)
cargo build --release -q -p mirage-cli --bin mirage
mirage="$target/release/mirage"
source scripts/lib/bench-bundle.sh
bundle="$(bench_bundle "$mirage" "$cache" "$assets")"

work="$cache/bench/snapshot-$n"
rm -rf "$work" && mkdir -p "$work"
"$py" - "$n" "$work" <<'PY'
import json, sys
import numpy as np
n, work = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(7)
centres = rng.standard_normal((64, 384)).astype("<f4")
v = centres[rng.integers(0, 64, n)] + 0.35 * rng.standard_normal((n, 384)).astype("<f4")
v /= np.linalg.norm(v, axis=1, keepdims=True)
np.save(f"{work}/vectors.npy", v)
findings = ["effusion", "edema", "pneumothorax", "cardiomegaly", "no acute findings"]
with open(f"{work}/ids.txt", "w") as ids, open(f"{work}/payload.jsonl", "w") as payload:
    for i in range(n):
        ids.write(f"report-{i}\n")
        payload.write(json.dumps({"finding": findings[i % 5], "site": i % 7}) + "\n")
PY
store="embedded:$work/indexes"
"$mirage" index build --bundle "$bundle" --format npy --vectors "$work/vectors.npy" \
  --ids "$work/ids.txt" --payload "$work/payload.jsonl" --store "$store" --collection bench \
  --progress quiet >/dev/null

secs() { "$py" -c 'import sys, time; print(f"{time.time():.3f}")'; }
t0=$(secs); "$mirage" index snapshot --store "$store" --collection bench --out "$work/bench.tar" >/dev/null
t1=$(secs); "$mirage" index restore "$work/bench.tar" --as restored --store "$store" >/dev/null
t2=$(secs); tar cf "$work/reference.tar" -C "$work/indexes" bench && sha256sum "$work/reference.tar" >/dev/null
t3=$(secs)
"$py" - "$n" "$work" "$t0" "$t1" "$t2" "$t3" <<'PY'
import os, sys
n, work = int(sys.argv[1]), sys.argv[2]
t0, t1, t2, t3 = map(float, sys.argv[3:])
def size(p):
    if os.path.isfile(p):
        return os.path.getsize(p)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(p) for f in fs)
collection = size(f"{work}/indexes/bench")
ours, ref = size(f"{work}/bench.tar"), size(f"{work}/reference.tar")
print(f"| {n} items | size (MB) | time (s) | vs tar + sha256sum of the stopped folder |")
print("|---|---:|---:|---:|")
print(f"| collection folder | {collection / 1e6:.1f} | | |")
print(f"| `mirage index snapshot` (serving) | {ours / 1e6:.1f} | {t1 - t0:.2f} | {(t1 - t0) / (t3 - t2):.2f}x |")
print(f"| `mirage index restore` (verify + open) | | {t2 - t1:.2f} | {(t2 - t1) / (t3 - t2):.2f}x |")
print(f"| reference: tar cf + sha256sum | {ref / 1e6:.1f} | {t3 - t2:.2f} | 1.00x |")
PY
