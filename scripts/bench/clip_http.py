"""The end-to-end half of bench-clip.sh: what a pipeline gets from `mirage serve` over HTTP with
the CLIP bundle, next to PyTorch open_clip in-process, both starting from the same PNG bytes and
texts.

    python clip_http.py mirage URL INPUTS_JSON         POST /v1/embeddings on a running server
    python clip_http.py torch - INPUTS_JSON THREADS    open_clip in this process, no HTTP

Inputs: 16 random 256 px RGB PNGs (seeded, the same in both modes) and the whole radlabels
reports of INPUTS_JSON (written by model/examples/bench_encode.rs). Batches of 8, one request
(or call) at a time, as a pipeline embedding a corpus sends them; measured with the rule of
bench_encode.rs (one warm-up call, then at least 3 calls and at least 3 s).

mirage: images go as base64 PNG in `{"image": ...}` objects and are decoded, resized and
normalised by the server; the response is the default JSON floats. PyTorch: PIL decodes the
PNG, open_clip's own eval transform (resize, centre crop, normalise) and `encode_image`;
open_clip's tokenizer and `encode_text`. PyTorch pays no HTTP, JSON or base64, so the ratio is
conservative for mirage. Prints the rates (items/s) as JSON.
"""

import base64
import io
import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
from rates import measure

BATCH = 8


def pngs(count=16, side=256):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        img = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def batches(pool):
    cursor = [0]

    def next_batch():
        chunk = [pool[(cursor[0] + i) % len(pool)] for i in range(BATCH)]
        cursor[0] += BATCH
        return chunk

    return next_batch


mode, url, inputs = sys.argv[1], sys.argv[2], json.loads(Path(sys.argv[3]).read_text())
images, reports = pngs(), inputs["reports"]
rates = {}
if mode == "mirage":
    encoded = [base64.b64encode(p).decode() for p in images]

    def post(items):
        req = urllib.request.Request(
            f"{url}/v1/embeddings",
            data=json.dumps({"input": items}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req) as r:
            body = json.loads(r.read())
        assert len(body["data"]) == len(items), body

    next_image, next_text = batches(encoded), batches(reports)
    rates["http_image_b8"] = measure(BATCH, lambda: post([{"image": b} for b in next_image()]))
    rates["http_text_reports_b8"] = measure(BATCH, lambda: post([{"text": t} for t in next_text()]))
elif mode == "torch":
    import open_clip
    import torch

    torch.set_num_threads(int(sys.argv[4]))
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-16-quickgelu", pretrained=None)
    model.eval()
    tok = open_clip.get_tokenizer("ViT-B-16-quickgelu")
    next_image, next_text = batches(images), batches(reports)

    def encode_images():
        pixels = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in next_image()])
        model.encode_image(pixels, normalize=True).tolist()

    def encode_texts():
        model.encode_text(tok(next_text()), normalize=True).tolist()

    with torch.inference_mode():
        rates["http_image_b8"] = measure(BATCH, encode_images)
        rates["http_text_reports_b8"] = measure(BATCH, encode_texts)
else:
    sys.exit(f"unknown mode {mode}")
print(json.dumps(rates))
