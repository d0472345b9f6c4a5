"""Peer half of the ANN benchmark: hnswlib and faiss on the vectors our Rust program wrote.

    python ann_peers.py BENCH_DIR

BENCH_DIR holds meta.json, base.f32, queries.f32 and gt.u32 (see load_bench). Every peer is built
with the same M and ef_construction as ours, on the same L2-normalised rows, with inner product as
the metric, so recall and speed compare like for like. Prints a Markdown summary and the full
ef sweep, and writes BENCH_DIR/peers.json with every measured figure.

Measuring rule, the same as the Rust side: build time is wall clock with `threads` threads; search
runs the queries one at a time on one thread, and QPS = queries / total wall time of that loop.
Recall@10 = mean over queries of |returned top-10 & exact top-10| / 10.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TARGET_RECALL = 0.95


def rss_bytes():
    """Resident memory of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def load_bench(bench_dir):
    """Reads meta.json and the three little-endian binary arrays, checking their sizes against meta."""
    meta = json.loads((bench_dir / "meta.json").read_text())
    n, dim, nq, k = meta["n"], meta["dim"], meta["queries"], meta["k"]

    def read(name, dtype, rows, cols):
        arr = np.fromfile(bench_dir / name, dtype=dtype)
        if arr.size != rows * cols:
            sys.exit(f"ann_peers: error: {name} has {arr.size} values, meta.json says {rows}x{cols}")
        return arr.reshape(rows, cols)

    # Explicit '<' so a big-endian host still reads what the Rust side wrote.
    base = read("base.f32", "<f4", n, dim).astype(np.float32, copy=False)
    queries = read("queries.f32", "<f4", nq, dim).astype(np.float32, copy=False)
    gt = read("gt.u32", "<u4", nq, k).astype(np.int64)
    return meta, base, queries, gt


def recall_at_k(found, gt):
    """Mean over queries of the overlap between the returned ids and the exact top-k, over k."""
    k = gt.shape[1]
    hits = sum(len(set(f[:k].tolist()) & set(g.tolist())) for f, g in zip(found, gt))
    return hits / (k * len(gt))


def sweep(search_one, set_ef, queries, gt, ef_list):
    """For each ef: one query per call, timed as a whole loop (no batching, like the Rust side)."""
    k = gt.shape[1]
    # One untimed pass first, so page faults and cold caches don't land on the first ef's QPS.
    set_ef(ef_list[0])
    for q in queries[:100]:
        search_one(q[None, :], k)
    points = []
    for ef in ef_list:
        set_ef(ef)
        found = []
        start = time.perf_counter()
        for q in queries:
            found.append(search_one(q[None, :], k))
        elapsed = time.perf_counter() - start
        points.append({"ef": ef, "recall": recall_at_k(found, gt), "qps": len(queries) / elapsed})
    return points


def run_hnswlib(meta, base, queries, gt):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=meta["dim"])
    rss = rss_bytes()
    start = time.perf_counter()
    index.init_index(max_elements=meta["n"], ef_construction=meta["ef_construction"], M=meta["m"])
    index.add_items(base, np.arange(meta["n"]), num_threads=meta["threads"])
    build_s = time.perf_counter() - start
    bytes_per_vector = (rss_bytes() - rss) / meta["n"]

    # One search thread, as on our side; knn_query would otherwise use every core.
    index.set_num_threads(1)

    def search_one(q, k):
        labels, _ = index.knn_query(q, k=k, num_threads=1)
        return labels[0]

    points = sweep(search_one, index.set_ef, queries, gt, meta["ef_search"])
    return {"name": "hnswlib", "version": getattr(hnswlib, "__version__", "0.8.0"),
            "build_s": build_s, "bytes_per_vector": bytes_per_vector, "points": points}


def run_faiss(meta, base, queries, gt):
    import faiss

    index = faiss.IndexHNSWFlat(meta["dim"], meta["m"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = meta["ef_construction"]
    faiss.omp_set_num_threads(meta["threads"])
    rss = rss_bytes()
    start = time.perf_counter()
    index.add(base)
    build_s = time.perf_counter() - start
    bytes_per_vector = (rss_bytes() - rss) / meta["n"]

    # Back to one OpenMP thread for search, as on our side.
    faiss.omp_set_num_threads(1)

    def set_ef(ef):
        index.hnsw.efSearch = ef

    def search_one(q, k):
        _, labels = index.search(q, k)
        row = labels[0]
        return row[row >= 0]  # faiss pads with -1 when it finds fewer than k

    points = sweep(search_one, set_ef, queries, gt, meta["ef_search"])
    return {"name": "faiss IndexHNSWFlat", "version": faiss.__version__,
            "build_s": build_s, "bytes_per_vector": bytes_per_vector, "points": points}


def first_reaching(points, target=TARGET_RECALL):
    """The point with the smallest ef whose recall reaches target, or None."""
    ok = [p for p in points if p["recall"] >= target]
    return min(ok, key=lambda p: p["ef"]) if ok else None


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def summarise(ours, peers, extra=()):
    """One summary row per engine; the ratios put ours over each peer, each at its own ef for 0.95.

    The build ratio uses ours' graph_build_s: the peers only build an in-memory graph, whereas
    ours' build_s also covers writing the SQLite store.
    """
    ours_at = first_reaching(ours["points"])
    ours_qps = ours_at["qps"] if ours_at else None
    rows = []
    for engine in [ours, *extra] + peers:
        at = first_reaching(engine["points"])
        # Ratios compare the product (ours: the store) with each peer; extra rows of ours (the
        # bare graph) are shown for context only.
        is_ours = engine is ours or any(engine is e for e in extra)
        rows.append({
            "engine": engine["name"],
            "build_s": engine["build_s"],
            "graph_build_s": engine.get("graph_build_s", engine["build_s"]),
            "ef_at_target": at["ef"] if at else None,
            "recall_at_target": at["recall"] if at else None,
            "qps_at_target": at["qps"] if at else None,
            "bytes_per_vector": engine.get("bytes_per_vector"),
            "build_ratio_ours_over_peer":
                None if is_ours else ratio(ours.get("graph_build_s", ours["build_s"]), engine["build_s"]),
            "qps_ratio_ours_over_peer":
                None if is_ours else ratio(ours_qps, at["qps"] if at else None),
        })
    return rows


def print_tables(meta, ours, peers, rows, extra=()):
    print(f"dataset {meta['dataset']}, n {meta['n']}, dim {meta['dim']}, queries {meta['queries']}, "
          f"M {meta['m']}, ef_construction {meta['ef_construction']}, threads {meta['threads']}")
    print()
    print(f"| engine | build s | ef @ R@10≥{TARGET_RECALL} | Recall@10 | QPS | bytes/vector | build ours/peer | QPS ours/peer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        build = fmt(r["build_s"], ".2f")
        if r["graph_build_s"] != r["build_s"]:
            build += f" (graph {r['graph_build_s']:.2f})"
        print(f"| {r['engine']} | {build} | {fmt(r['ef_at_target'], 'd')} | "
              f"{fmt(r['recall_at_target'], '.4f')} | {fmt(r['qps_at_target'], '.0f')} | "
              f"{fmt(r['bytes_per_vector'], '.0f')} | "
              f"{fmt(r['build_ratio_ours_over_peer'], '.2f')} | {fmt(r['qps_ratio_ours_over_peer'], '.2f')} |")
    print()
    print("Build ratio uses ours' graph build time (peers have no storage step); ratios > 1 on "
          "QPS and < 1 on build favour ours. Search: one query per call, one thread, for every "
          "engine. bytes/vector: ours = graph + flat f32 copy in memory (the store's state); "
          "peers = growth of resident memory over the build.")
    graph = next((e for e in extra if "graph alone" in e["name"]), None)
    ours_at, graph_at = first_reaching(ours["points"]), graph and first_reaching(graph["points"])
    if ours_at and graph_at:
        print(f"Store overhead over its bare engine at R@10≥{TARGET_RECALL}: "
              f"{100 * (1 - ours_at['qps'] / graph_at['qps']):.1f} % of QPS "
              f"(store ef {ours_at['ef']}, graph ef {graph_at['ef']}; hits as ids, scores and payloads).")
        for e in meta.get("ours_with_content", []):
            at = first_reaching(e["points"])
            if at:
                print(f"With each hit's text read from SQLite (the search API's answer): "
                      f"{100 * (1 - at['qps'] / graph_at['qps']):.1f} % (ef {at['ef']}).")
    if meta.get("filtered"):
        print()
        print("Filtered queries (embedded store, f32; recall against filtered brute force):")
        print()
        print("| filter keeps | ef | Recall@10 | QPS |")
        print("|---|---:|---:|---:|")
        for f in meta["filtered"]:
            for p in f["points"]:
                print(f"| {f['keeps']} | {p['ef']} | {p['recall']:.4f} | {p['qps']:.0f} |")
    print()
    print("| engine | ef | Recall@10 | QPS |")
    print("|---|---:|---:|---:|")
    for engine in [ours, *extra] + peers:
        for p in engine["points"]:
            print(f"| {engine['name']} | {p['ef']} | {p['recall']:.4f} | {p['qps']:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_dir", type=Path, help="directory written by the Rust ANN benchmark")
    args = parser.parse_args()

    meta, base, queries, gt = load_bench(args.bench_dir)
    ours = meta["ours"]
    extra = ([meta["ours_graph"]] if "ours_graph" in meta else []) + meta.get("ours_with_content", []) \
        + meta.get("ours_quantized", [])

    peers, skipped = [], []
    for label, runner in (("hnswlib", run_hnswlib), ("faiss", run_faiss)):
        try:
            peers.append(runner(meta, base, queries, gt))
        except ImportError as e:
            # A missing peer should not sink the others; say which one and carry on.
            print(f"ann_peers: {label} not importable ({e}); skipping it", file=sys.stderr)
            print(f"_{label} skipped: not importable ({e})_")
            skipped.append({"engine": label, "reason": str(e)})

    rows = summarise(ours, peers, extra)
    print_tables(meta, ours, peers, rows, extra)

    out = {
        "meta": {key: meta[key] for key in meta if key not in ("ours", "ours_graph")},
        "target_recall": TARGET_RECALL,
        "peers": peers,
        "skipped": skipped,
        "summary": rows,
    }
    (args.bench_dir / "peers.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
