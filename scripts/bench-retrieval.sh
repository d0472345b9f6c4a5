#!/usr/bin/env bash
# Retrieval quality on the radlabels benchmark (scripts: `mirage data radlabels-beir`: 1,000
# chest-radiograph reports, 96 judged queries, two per finding: its term and a paraphrase) with
# the MiniLM bundle: `mirage eval-retrieval` runs dense, lexical and hybrid search through the
# embedded store (and through Qdrant with --qdrant), with paired bootstrap intervals; a Python
# BM25 (rank_bm25, pinned) over the same analyzer's terms is the reference the lexical mode must
# match (nDCG@10 within ±0.02). Then the same with the reports split into passages (token windows,
# and report sections), ranked as documents at their best passage. Results land in $MIRAGE_CACHE/bench/retrieval/ (and
# docs/results/retrieval/ with --commit).
#
#   scripts/bench-retrieval.sh [--qdrant] [--commit]
set -euo pipefail
cd "$(dirname "$0")/.."
qdrant=0 commit=0
for a in "$@"; do
  case "$a" in
    --qdrant) qdrant=1 ;;
    --commit) commit=1 ;;
    *) echo "usage: scripts/bench-retrieval.sh [--qdrant] [--commit]" >&2; exit 2 ;;
  esac
done
source scripts/lib/bench-env.sh
scripts/fetch-assets.sh >&2
cargo build --release -q -p mirage-cli --features qdrant --bin mirage
mirage="$target/release/mirage"
python="$(scripts/venv.sh bm25 "a few seconds" rank-bm25==0.2.2 numpy==2.4.6 | tail -n1)"
source scripts/lib/bench-bundle.sh
bundle="$(bench_bundle "$mirage" "$cache" "$assets")"
work="$cache/bench/retrieval"
rm -rf "$work"
mkdir -p "$work"
"$mirage" data radlabels-beir --out "$work/radlabels-beir" >&2

run() { # STORE OUT
  "$mirage" eval-retrieval --bundle "$bundle" --data "$work/radlabels-beir" --store "$1" \
    --collection "radlabels-beir-$$" --group-by kind --label-field present --fusions rrf,weighted \
    --dump-tokens --out "$2"
}
echo "## embedded store"
mkdir -p "$work/embedded"
run "embedded:$work/index" "$work/embedded" | tee "$work/embedded/table.md"
echo
echo "## reference: rank_bm25 over the same terms"
"$python" scripts/bench/bm25_ref.py "$work/radlabels-beir" "$work/embedded/tokens" --group-by kind | tee "$work/bm25-reference.json"
"$python" - "$work/embedded/results.json" "$work/bm25-reference.json" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
ref = json.load(open(sys.argv[2]))
print("\n| group | lexical nDCG@10 | rank_bm25 nDCG@10 | difference |\n|---|---|---|---|")
worst = 0.0
for row in ours["means"]:
    if row["mode"] != "lexical":
        continue
    g = row["group"]
    a, b = row["means"]["ndcg"], ref["means"][g]["ndcg"]
    worst = max(worst, abs(a - b))
    print(f"| {g} | {a:.3f} | {b:.3f} | {a - b:+.3f} |")
print(f"\nlargest |difference| {worst:.3f} ({'within' if worst <= 0.02 else 'OUTSIDE'} ±0.02)")
PY
for chunk in tokens sections; do
  echo
  echo "## embedded store, passages (--chunk $chunk; rankings of documents at their best passage)"
  mkdir -p "$work/passages-$chunk"
  "$mirage" eval-retrieval --bundle "$bundle" --data "$work/radlabels-beir" --store "embedded:$work/index" \
    --collection "radlabels-beir-$chunk-$$" --group-by kind --label-field present --fusions rrf,weighted \
    --chunk "$chunk" --out "$work/passages-$chunk" | tee "$work/passages-$chunk/table.md"
done
if ((qdrant)); then
  echo
  echo "## Qdrant store"
  scripts/with-qdrant.sh bash -c "\"$mirage\" eval-retrieval --bundle \"$bundle\" --data \"$work/radlabels-beir\" \
    --store qdrant:\$MIRAGE_QDRANT_URL --collection radlabels-beir-$$ --group-by kind --label-field present --fusions rrf,weighted \
    --out \"$work/qdrant\"" | tee "$work/qdrant-table.md"
fi
if ((commit)); then
  dest=docs/results/retrieval
  mkdir -p "$dest"
  cp "$work/embedded/results.json" "$work/embedded/recall.png" "$work/bm25-reference.json" "$dest/"
  for chunk in tokens sections; do
    cp "$work/passages-$chunk/results.json" "$dest/results-passages-$chunk.json"
  done
  [[ -f "$work/qdrant/results.json" ]] && cp "$work/qdrant/results.json" "$dest/results-qdrant.json"
  echo "copied to $dest" >&2
fi
