#!/usr/bin/env bash
# ANN benchmark: our embedded store next to hnswlib and faiss (pip), same vectors, same M and
# ef_construction, same thread count for building, one thread and one query at a time for search.
# Prints, per dataset, build time and QPS at the smallest ef reaching Recall@10 >= 0.95, and the
# ratios ours / peer (> 1: we are faster). Datasets: seeded embedding-like vectors (N x 384), and
# real MiniLM embeddings of the radlabels reports when the assets are present.
#
#   scripts/bench-index.sh [N]      (default 100000; THREADS=… to change the build threads,
#                                    QUANTIZATIONS=f32 to build one store, FILTERED=false to skip
#                                    the filtered sweep, EF=64,128,256 for another ef sweep;
#                                    LIBRARY=false to skip the library part, CLI=false the CLI part,
#                                    CLI_EF=… its ef sweep, REPEAT=… its query-set repetitions)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
threads="${THREADS:-$(nproc)}"
source scripts/lib/bench-env.sh
py=$(scripts/setup-ann-bench.sh | tail -n1)
cargo build --release -q -p mirage-index --example bench_ann
cargo build --release -q -p mirage-cli --bin mirage
quant="${QUANTIZATIONS:-f32,f16,i8}"
bench="$target/release/examples/bench_ann"
mirage="$target/release/mirage"

if [[ "${LIBRARY:-true}" == true ]]; then
  out="$cache/bench/ann-synthetic-$n"
  rm -rf "$out"
  "$bench" "$out" --n "$n" --threads "$threads" --quantizations "$quant" \
    --filtered "${FILTERED:-true}" --ef "${EF:-16,32,64,128,256}"
  echo
  "$py" scripts/bench/ann_peers.py "$out"
  echo
fi

if [[ "${CLI:-true}" == true && -d "$assets/minilm" ]]; then
  # The same comparison as a user meets it: `mirage index build --format npy` and
  # `mirage search --vectors` against hnswlib, on freshly written vectors of the same kind.
  source scripts/lib/bench-bundle.sh
  bundle="$(bench_bundle "$mirage" "$cache" "$assets")"
  cli="$cache/bench/ann-cli-$n"
  rm -rf "$cli"
  "$bench" "$cli" --n "$n" --threads "$threads" --ef "${CLI_EF:-16,32,64,128,256}" --data-only true
  "$py" scripts/bench/ann_cli.py "$cli" "$mirage" "$bundle"
  echo
fi

if [[ -d "$assets/minilm" && -d "$assets/radlabels/synthetic_reports" ]]; then
  source scripts/lib/bench-bundle.sh
  bundle="$(bench_bundle "$mirage" "$cache" "$assets")"
  real="$cache/bench/ann-minilm-radlabels"
  rm -rf "$real" && mkdir -p "$real"
  echo "embedding the radlabels reports with MiniLM…" >&2
  "$py" - "$mirage" "$bundle" "$assets/radlabels/synthetic_reports" "$real/embeddings.f32" <<'PY'
import json, subprocess, sys
from pathlib import Path
import numpy as np
mirage, bundle, reports, out = sys.argv[1:]
texts = [p.read_text().strip() for p in sorted(Path(reports).glob("*.txt"))]
rows = []
for i in range(0, len(texts), 100):
    res = subprocess.run([mirage, "embed", "--bundle", bundle, "--format", "jsonl", "--text", *texts[i:i + 100]],
                         check=True, capture_output=True, text=True)
    rows += [json.loads(line)["embedding"] for line in res.stdout.splitlines()]
np.asarray(rows, dtype="<f4").tofile(out)
print(f"{len(rows)} embeddings", file=sys.stderr)
PY
  "$bench" "$real" --embeddings "$real/embeddings.f32" --dim 384 \
    --holdout 100 --threads "$threads" --ef 10,16,32,64 --dataset "MiniLM-L6 radlabels reports (100 held out as queries)"
  echo
  "$py" scripts/bench/ann_peers.py "$real"
else
  echo "(no MiniLM/radlabels assets: run scripts/fetch-assets.sh for the real-embedding table)" >&2
fi
