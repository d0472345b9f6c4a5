"""A textbook BM25 (rank_bm25's BM25Okapi, k1 = 1.2, b = 0.75) over the terms `mirage
eval-retrieval --dump-tokens` wrote, scored with the same measures (nDCG@k, Recall@depth,
MRR@k) on the same judgements: the reference the lexical mode is held to.

    python bm25_ref.py BENCHMARK_DIR TOKENS_DIR [--k 10] [--depth 100] [--group-by kind]

Prints one JSON object: means per group, and the seconds BM25 scoring took per query.
"""
import argparse
import json
import math
import time
from collections import defaultdict

from rank_bm25 import BM25Okapi


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def ndcg(ranking, rel, k):
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    grades = sorted(rel.values(), reverse=True)[:k]
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(grades))
    return dcg / ideal if ideal else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("benchmark")
    ap.add_argument("tokens")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--group-by")
    ap.add_argument("--split", default="test")
    a = ap.parse_args()

    corpus = read_jsonl(f"{a.tokens}/corpus.jsonl")
    queries = read_jsonl(f"{a.tokens}/queries.jsonl")
    meta = {q["_id"]: q.get("metadata", {}) for q in read_jsonl(f"{a.benchmark}/queries.jsonl")}
    qrels = defaultdict(dict)
    with open(f"{a.benchmark}/qrels/{a.split}.tsv") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and parts[0] == "query-id":
                continue
            if len(parts) == 3 and int(parts[2]) > 0:
                qrels[parts[0]][parts[1]] = int(parts[2])

    # Documents without terms are not in the lexical index (as in both stores).
    docs = [d for d in corpus if d["tokens"]]
    ids = [d["_id"] for d in docs]
    bm25 = BM25Okapi([d["tokens"] for d in docs], k1=1.2, b=0.75)
    groups = defaultdict(list)
    started = time.perf_counter()
    for q in queries:
        rel = qrels.get(q["_id"])
        if not rel:
            continue
        scores = bm25.get_scores(q["tokens"])
        # Only documents that share a term are retrieved, as a lexical index retrieves them.
        matched = [i for i, s in enumerate(scores) if s != 0.0 and any(t in bm25.doc_freqs[i] for t in q["tokens"])]
        matched.sort(key=lambda i: (-scores[i], ids[i]))
        ranking = [ids[i] for i in matched[: a.depth]]
        m = {
            "ndcg": ndcg(ranking, rel, a.k),
            "recall": sum(1 for d in ranking if d in rel) / len(rel),
            "mrr": next((1.0 / (i + 1) for i, d in enumerate(ranking[: a.k]) if d in rel), 0.0),
        }
        groups["all"].append(m)
        if a.group_by:
            groups[str(meta.get(q["_id"], {}).get(a.group_by, "all"))].append(m)
    seconds = time.perf_counter() - started
    out = {
        "reference": "rank_bm25 BM25Okapi k1=1.2 b=0.75",
        "seconds_per_query": seconds / max(1, len(groups["all"])),
        "means": {
            g: {key: sum(x[key] for x in v) / len(v) for key in ("ndcg", "recall", "mrr")} | {"queries": len(v)}
            for g, v in groups.items()
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
