"""Reference embeddings of all-MiniLM-L6-v2 with PyTorch `transformers`, for the candle parity test.

Sentence-transformers recipe: BertModel last hidden state, attention-mask-weighted mean pooling,
L2 normalisation; truncation at the model's max_seq_length (256). Inputs are taken from the
radlabels reports: single sentences, whole sections and whole reports, so lengths run from a few
tokens to well past the truncation limit.

    python scripts/reference/minilm_reference.py ASSETS_DIR OUT_JSON

Writes {"model_sha256", "max_length", "items": [{"text", "tokens", "embedding"}]}.
"""

import hashlib
import json
import re
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertModel

assets = Path(sys.argv[1])
out = Path(sys.argv[2])
model_dir = assets / "minilm"
max_length = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]

reports = sorted((assets / "radlabels" / "synthetic_reports").glob("*.txt"))
texts = []
for i, path in enumerate(reports[:400]):
    report = path.read_text()
    flat = " ".join(report.split())
    if i % 40 == 0:
        texts.append(flat)  # whole report
    elif i % 40 == 1:
        texts.append(" ".join([flat] * 3))  # far past the truncation limit
    elif i % 4 == 0:
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", flat) if len(s.strip()) > 3]
        if sentences:
            texts.append(sentences[(i // 4) % len(sentences)])
    elif i % 4 == 2:
        texts.append(flat[: 40 + (i * 7) % 300])
texts = list(dict.fromkeys(texts))
assert len(texts) >= 100, len(texts)

torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = BertModel.from_pretrained(model_dir).eval()
items = []
with torch.no_grad():
    for start in range(0, len(texts), 16):
        chunk = texts[start : start + 16]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        emb = torch.nn.functional.normalize(pooled, p=2, dim=1)
        for text, e, m in zip(chunk, emb, enc["attention_mask"]):
            items.append({"text": text, "tokens": int(m.sum()), "embedding": [round(float(x), 7) for x in e]})

sha = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"model_sha256": sha, "max_length": max_length, "torch": torch.__version__, "items": items}))
over = sum(1 for it in items if it["tokens"] >= max_length)
print(f"wrote {len(items)} reference embeddings ({over} truncated at {max_length} tokens) to {out}")
