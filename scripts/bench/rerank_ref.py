"""Rerank speed: `mirage serve --reranker` over HTTP against transformers in-process, the Python
half of scripts/bench-rerank.sh.

    python rerank_ref.py make OUT_DIR MINILM_DIR
        A cross-encoder of the ms-marco-MiniLM-L-6-v2 shape (BertForSequenceClassification, one
        label, MiniLM-L6's config and tokenizer) with seeded random weights: no cross-encoder
        weights can be downloaded here, and speed does not depend on the weights.
    python rerank_ref.py run MODEL_DIR URL REPORTS_DIR THREADS ROUNDS OUT_JSON
        Reranks 50 reports for each of 12 finding queries (the radlabels reports, 125 tokens on
        average, pairs read up to 512 tokens), each query as one call: POST URL/v1/rerank, and
        transformers (eval, float32, THREADS threads, no_grad, the 50 pairs as one batch padded
        to its longest, truncation longest-first, as sentence-transformers' CrossEncoder does
        with batch_size ≥ 50). The two run interleaved, each leading in turn, ROUNDS times; a
        cell is the best round. The scores of the two are compared too (cosine over all pairs,
        and the largest difference): the parity of a full-size model.
"""

import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

QUERIES = [
    "pleural effusion", "pneumothorax", "cardiomegaly", "pulmonary edema", "consolidation",
    "atelectasis", "tracheostomy tube", "endotracheal tube", "central venous catheter",
    "rib fracture", "hiatal hernia", "pneumonia",
]
DOCS_PER_QUERY = 50


def make(out: Path, minilm: Path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    base = json.loads((minilm / "config.json").read_text())
    config = BertConfig(
        vocab_size=base["vocab_size"], hidden_size=base["hidden_size"],
        num_hidden_layers=base["num_hidden_layers"],
        num_attention_heads=base["num_attention_heads"],
        intermediate_size=base["intermediate_size"], hidden_act=base["hidden_act"],
        max_position_embeddings=base["max_position_embeddings"], num_labels=1,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok = json.loads((minilm / "tokenizer.json").read_text())
    tok["truncation"] = None
    tok["padding"] = None
    (out / "tokenizer.json").write_text(json.dumps(tok))
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))


def workload(reports: Path):
    texts = [p.read_text() for p in sorted(reports.glob("*.txt"))]
    # A fixed, different slice of reports per query: what a first-stage retrieval would hand on.
    return [
        (q, [texts[(i * 37 + j) % len(texts)] for j in range(DOCS_PER_QUERY)])
        for i, q in enumerate(QUERIES)
    ]


def run(model_dir: Path, url: str, reports: Path, threads: int, rounds: int, out: Path) -> None:
    import numpy as np
    import torch
    from transformers import BertForSequenceClassification, PreTrainedTokenizerFast

    torch.set_num_threads(threads)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(model_dir / "tokenizer.json"), model_max_length=512,
        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
    )
    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    calls = workload(reports)

    def transformers_call(query, docs):
        batch = tokenizer([query] * len(docs), docs, padding=True, truncation="longest_first",
                          max_length=512, return_token_type_ids=True, return_tensors="pt")
        with torch.no_grad():
            return torch.sigmoid(model(**batch).logits[:, 0]).tolist()

    def http_call(query, docs):
        body = json.dumps({"query": query, "documents": docs}).encode()
        req = urllib.request.Request(f"{url}/v1/rerank", data=body,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            results = json.loads(r.read())["results"]
        scores = [0.0] * len(docs)
        for row in results:
            scores[row["index"]] = row["relevance_score"]
        return scores

    contenders = {"mirage HTTP /v1/rerank": http_call, "transformers": transformers_call}
    # Warm-up (and the scores compared below).
    scores = {name: [s for q, d in calls[:2] for s in fn(q, d)] for name, fn in contenders.items()}
    best = {name: None for name in contenders}
    for r in range(rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            latencies = []
            for q, d in calls:
                t = time.perf_counter()
                contenders[name](q, d)
                latencies.append(time.perf_counter() - t)
            total = sum(latencies)
            row = {"pairs_per_s": len(calls) * DOCS_PER_QUERY / total,
                   "p50_ms": 1000 * statistics.median(latencies),
                   "max_ms": 1000 * max(latencies)}
            if best[name] is None or row["pairs_per_s"] > best[name]["pairs_per_s"]:
                best[name] = row
    a = np.array(scores["mirage HTTP /v1/rerank"])
    b = np.array(scores["transformers"])
    agreement = {"pairs": len(a), "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
                 "max_abs_diff": float(np.abs(a - b).max())}
    ref = best["transformers"]["pairs_per_s"]
    print("| reranker | pairs/s | p50 ms per call (50 pairs) | max ms | vs transformers |")
    print("|---|---:|---:|---:|---:|")
    for name, row in best.items():
        print(f"| {name} | {row['pairs_per_s']:.1f} | {row['p50_ms']:.0f} | {row['max_ms']:.0f} "
              f"| {row['pairs_per_s'] / ref:.2f}× |")
    print(f"\nscores, {agreement['pairs']} pairs: cosine {agreement['cosine']:.6f}, "
          f"largest difference {agreement['max_abs_diff']:.2e}")
    out.write_text(json.dumps({"threads": threads, "rounds": rounds, "calls": len(calls),
                               "docs_per_call": DOCS_PER_QUERY, "best": best,
                               "agreement": agreement}, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "run":
        run(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), int(sys.argv[5]),
            int(sys.argv[6]), Path(sys.argv[7]))
    else:
        sys.exit(__doc__)
