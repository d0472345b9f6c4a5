"""The ANN benchmark as a user meets it: `mirage index build --format npy` and
`mirage search --vectors`, next to hnswlib in the same run, on the vectors bench_ann wrote.

    python ann_cli.py BENCH_DIR MIRAGE BUNDLE

BENCH_DIR holds meta.json, base.f32, queries.f32 and gt.u32 (`bench_ann --data-only true`).
Build: wall time of the whole `mirage index build` process (reading the .npy, SQLite commits,
graph linking with `threads` threads, the final dump) against hnswlib's `add_items` with the same
threads; the CPU the command used is printed too. Search: the query loop `mirage search --vectors`
reports on stderr (one query at a time, one thread, ids and scores out; opening the collection
is not counted) against hnswlib's one-query-per-call loop at the same ef, both over the query set
repeated REPEAT times (default 10), so neither side's figure is the first touch of a freshly
loaded graph (a process answering 1,000 queries spends a third of its time faulting the graph
in; hnswlib's loop also has an untimed warm-up). Ratios: build ours /
hnswlib (< 1 favours ours), QPS ours / hnswlib (> 1 favours ours). Writes BENCH_DIR/cli.json.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ann_peers import TARGET_RECALL, load_bench, recall_at_k, run_hnswlib  # noqa: E402


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main():
    bench_dir, mirage, bundle = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    meta, base, queries, gt = load_bench(bench_dir)
    repeat = int(os.environ.get("REPEAT", "10"))
    queries, gt = np.tile(queries, (repeat, 1)), np.tile(gt, (repeat, 1))
    work = bench_dir / "cli"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    np.save(work / "vectors.npy", base)
    np.save(work / "queries.npy", queries)
    (work / "ids.txt").write_text("".join(f"{i}\n" for i in range(meta["n"])))
    store = f"embedded:{work / 'indexes'}"
    env = dict(os.environ, RAYON_NUM_THREADS=str(meta["threads"]))

    cpu0, t0 = children_cpu_s(), time.perf_counter()
    subprocess.run([mirage, "index", "build", "--bundle", bundle, "--format", "npy",
                    "--vectors", str(work / "vectors.npy"), "--ids", str(work / "ids.txt"),
                    "--store", store, "--collection", "bench", "--m", str(meta["m"]),
                    "--ef-construction", str(meta["ef_construction"]),
                    "--exact-threshold", "0"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    build_s = time.perf_counter() - t0
    build_cpu = children_cpu_s() - cpu0
    print(f"mirage index build: {build_s:.1f} s wall, {build_cpu:.1f} s CPU "
          f"({100 * build_cpu / build_s:.0f} % of one core)", file=sys.stderr)

    points = []
    for ef in meta["ef_search"]:
        res = subprocess.run([mirage, "search", "--bundle", bundle, "--store", store,
                              "--collection", "bench", "--vectors", str(work / "queries.npy"),
                              "--k", str(meta["k"]), "--ef", str(ef)],
                             check=True, env=env, capture_output=True, text=True)
        found = [np.array([int(i) for i in json.loads(line)["ids"]])
                 for line in res.stdout.splitlines()]
        summary = json.loads(res.stderr.strip().splitlines()[-1])
        points.append({"ef": ef, "recall": recall_at_k(found, gt), "qps": summary["qps"]})
        print(f"  mirage search --vectors ef {ef}: recall {points[-1]['recall']:.4f}, "
              f"{summary['qps']:.0f} QPS", file=sys.stderr)

    peer = run_hnswlib(meta, base, queries, gt)
    by_ef = {p["ef"]: p for p in peer["points"]}
    print(f"\n{meta['dataset']}, n {meta['n']}, dim {meta['dim']}, M {meta['m']}, "
          f"ef_construction {meta['ef_construction']}, {meta['threads']} build threads, "
          f"{len(queries)} queries ({meta['queries']} × {repeat})\n")
    print(f"| | build s | build ours/hnswlib |")
    print("|---|---:|---:|")
    print(f"| `mirage index build --format npy` | {build_s:.1f} ({build_cpu / build_s:.2f} cores busy) | "
          f"{build_s / peer['build_s']:.2f} |")
    print(f"| hnswlib `add_items` | {peer['build_s']:.1f} | 1.00 |")
    print()
    print("| ef | Recall@10 ours | QPS `mirage search --vectors` | Recall@10 hnswlib | QPS hnswlib | QPS ours/hnswlib |")
    print("|---:|---:|---:|---:|---:|---:|")
    for p in points:
        h = by_ef.get(p["ef"])
        mark = "" if p["recall"] >= TARGET_RECALL else " (recall < 0.95)"
        print(f"| {p['ef']} | {p['recall']:.4f} | {p['qps']:.0f} | {h['recall']:.4f} | "
              f"{h['qps']:.0f} | {p['qps'] / h['qps']:.2f}{mark} |")
    (bench_dir / "cli.json").write_text(json.dumps(
        {"meta": meta, "build_s": build_s, "build_cpu_s": build_cpu, "points": points,
         "hnswlib": peer}, indent=2))


if __name__ == "__main__":
    main()
