"""Encode throughput of the same towers in PyTorch (CPU), the reference half of bench-encode.sh.

    python encode_torch.py MINILM_DIR GOLDEN_JSON THREADS

Same inputs and the same measuring rule as model/examples/bench_encode.rs: one warm-up call, then
at least 3 calls and at least 3 s. MiniLM = transformers BertModel + masked mean + L2 norm with
truncation at 256; ResNet-50 = torchvision trunk + CLIP attention pool + projection + L2 norm.
"""

import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))

minilm, golden, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
texts = [it["text"] for it in json.loads(Path(golden).read_text())["items"]]


def measure(items, fn, min_time=3.0):
    fn()
    start, runs = time.perf_counter(), 0
    while runs < 3 or time.perf_counter() - start < min_time:
        fn()
        runs += 1
    return runs * items / (time.perf_counter() - start)


tok = AutoTokenizer.from_pretrained(minilm)
bert = BertModel.from_pretrained(minilm).eval()
out = {}
with torch.inference_mode():
    for batch in (1, 8, 32):
        cursor = [0]

        def run():
            chunk = [texts[(cursor[0] + i) % len(texts)] for i in range(batch)]
            cursor[0] += batch
            enc = tok(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = bert(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)

        out[f"text_b{batch}"] = measure(batch, run)

    # Reuse the reference script's tower definition (importing it would run its exports).
    src = (Path(__file__).resolve().parents[1] / "reference" / "vision_reference.py").read_text()
    ns = {}
    exec(src.split("out_dir = Path(sys.argv[1])")[0], ns)
    from torchvision.models import resnet50

    tower = ns["ResNetTower"](resnet50(weights=None), "attention").eval()
    proj = torch.nn.Linear(2048, 384)
    pixels = torch.randn(8, 3, 224, 224)
    out["image_b8"] = measure(8, lambda: torch.nn.functional.normalize(proj(tower(pixels)), dim=1))
print(json.dumps(out))
