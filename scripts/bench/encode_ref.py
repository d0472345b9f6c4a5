"""Encode throughput of the references, the Python half of bench-encode.sh.

    python encode_ref.py torch|onnxruntime MINILM_DIR BUNDLE_DIR INPUTS_JSON THREADS

Same inputs (INPUTS_JSON, written by the Rust half), same workloads and the same measuring rule
as model/examples/bench_encode.rs: one warm-up call, then at least 3 calls and at least 3 s.
- torch: PyTorch eager. MiniLM = transformers BertModel + masked mean + L2 norm (truncation at
  256); ResNet-50 = torchvision trunk + CLIP attention pool + projection + L2 norm.
- onnxruntime: the Python onnxruntime package on the bundle's own text.onnx / vision.onnx (the
  graphs mirage's ort engine runs), tokenised by the bundle's tokenizer.json, with the session
  options mirage uses (all graph optimisations, THREADS intra-op threads, one inter-op thread)
  and mirage's split of a batch into sub-batches of similar length (length_groups, a copy of
  model/src/model.rs), so the ratio to it measures mirage's own overhead.
"""

import json
import sys
from pathlib import Path

import numpy as np
from rates import measure, text_rates

mode, minilm, bundle, inputs, threads = sys.argv[1:6]
threads = int(threads)
texts = json.loads(Path(inputs).read_text())


out = {}
if mode == "torch":
    import torch
    from transformers import AutoTokenizer, BertModel

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(minilm)
    bert = BertModel.from_pretrained(minilm).eval()
    with torch.inference_mode():

        def embed(chunk):
            enc = tok(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = bert(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)

        out.update(text_rates(texts, embed))
        # Reuse the reference script's tower definition (importing it would run its exports).
        src = (Path(__file__).resolve().parents[1] / "reference" / "vision_reference.py").read_text()
        ns = {}
        exec(src.split("out_dir = Path(sys.argv[1])")[0], ns)
        from torchvision.models import resnet50

        tower = ns["ResNetTower"](resnet50(weights=None), "attention").eval()
        proj = torch.nn.Linear(2048, 384)
        for batch in (1, 8):
            pixels = torch.randn(batch, 3, 224, 224)
            out[f"image_b{batch}"] = measure(
                batch, lambda: torch.nn.functional.normalize(proj(tower(pixels)), dim=1)
            )
elif mode == "onnxruntime":
    import onnxruntime as ort
    from tokenizers import Tokenizer

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    text = ort.InferenceSession(str(Path(bundle) / "text.onnx"), so, providers=["CPUExecutionProvider"])
    vision = ort.InferenceSession(str(Path(bundle) / "vision.onnx"), so, providers=["CPUExecutionProvider"])
    config = json.loads((Path(bundle) / "bundle.json").read_text())
    tok = Tokenizer.from_file(str(Path(bundle) / "tokenizer.json"))
    tok.enable_truncation(config["tokenizer"]["max_length"])
    tok.enable_padding()

    def length_groups(lengths, call_cost=16):
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        n = len(order)
        best, cut = [0] * (n + 1), [0] * (n + 1)
        for j in range(1, n + 1):
            longest = max(lengths[order[j - 1]], 1)
            cut[j], best[j] = min(((i, best[i] + call_cost + (j - i) * longest) for i in range(j)), key=lambda t: t[1])
        groups, j = [], n
        while j > 0:
            groups.append(order[cut[j]:j])
            j = cut[j]
        return groups[::-1]

    def embed(chunk):
        enc = tok.encode_batch(chunk)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)
        lengths = mask.sum(1)
        out = np.empty((len(chunk), config["architecture"]["embed_dim"]), dtype=np.float32)
        for g in length_groups(lengths.tolist()):
            n = int(lengths[g].max())
            feed = {"input_ids": ids[g, :n], "attention_mask": mask[g, :n], "token_type_ids": types[g, :n]}
            out[g] = text.run(None, feed)[0]
        return out

    out.update(text_rates(texts, embed))
    size = config["preprocess"]["image_size"]
    for batch in (1, 8):
        pixels = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
        out[f"image_b{batch}"] = measure(batch, lambda: vision.run(None, {"pixel_values": pixels}))
    out["version"] = ort.__version__
else:
    sys.exit(f"unknown mode {mode}")
print(json.dumps(out))
