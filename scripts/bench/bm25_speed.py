"""Reference half of scripts/bench-lexical.sh: rank_bm25 (BM25Okapi, k1 = 1.2, b = 0.75) over the
very terms bench_lexical wrote, top 10 per query, single-threaded: queries per second and
latency percentiles, printed as JSON.

    python bm25_speed.py OUT_DIR
"""
import json
import sys
import time

import numpy as np
from rank_bm25 import BM25Okapi


def main():
    out = sys.argv[1]
    with open(f"{out}/corpus-tokens.jsonl") as f:
        corpus = [json.loads(line) for line in f]
    with open(f"{out}/query-tokens.jsonl") as f:
        queries = [json.loads(line) for line in f]
    started = time.perf_counter()
    bm25 = BM25Okapi(corpus, k1=1.2, b=0.75)
    build = time.perf_counter() - started
    latencies = []
    started = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        scores = bm25.get_scores(q)
        top = np.argpartition(-scores, 10)[:10]
        top[np.argsort(-scores[top])]
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[round((len(latencies) - 1) * q)] * 1e3
    print(json.dumps({
        "reference": "rank_bm25 0.2.2 BM25Okapi (numpy), top 10",
        "build_seconds": build,
        "qps": len(queries) / seconds,
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "mean_ms": seconds / len(queries) * 1e3,
    }))


if __name__ == "__main__":
    main()
