"""The measuring rule the Python references share with model/examples/bench_encode.rs: one
warm-up call, then at least 3 calls and at least 3 s; items per second."""

import time


def measure(items, fn, min_time=3.0):
    fn()
    start, runs = time.perf_counter(), 0
    while runs < 3 or time.perf_counter() - start < min_time:
        fn()
        runs += 1
    return runs * items / (time.perf_counter() - start)


def text_rates(texts, embed):
    """Rates of `embed(list of texts)` on each pool of INPUTS_JSON ("short", "reports") at
    batch 1, 8 and 32, walking the pool round-robin so every call gets new texts."""
    out = {}
    for name in ("short", "reports"):
        pool = texts[name]
        for batch in (1, 8, 32):
            cursor = [0]

            def run():
                chunk = [pool[(cursor[0] + i) % len(pool)] for i in range(batch)]
                cursor[0] += batch
                embed(chunk)

            out[f"text_{name}_b{batch}"] = measure(batch, run)
    return out
