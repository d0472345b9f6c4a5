"""The PyTorch open_clip half of bench-clip.sh.

    python clip_ref.py make OUT_DIR            a random ViT-B-16-quickgelu as an open_clip
                                               checkpoint directory (the OpenAI layout)
    python clip_ref.py torch OUT_DIR INPUTS_JSON THREADS

`torch` measures open_clip's own encode_text / encode_image (eager PyTorch, inference mode,
normalised output) on the same texts (INPUTS_JSON, written by model/examples/bench_encode.rs) and
random 224 px images, with the measuring rule of bench_encode.rs: one warm-up call, then at least
3 calls and at least 3 s. open_clip's tokenizer pads every text to the 77-token context, as
open_clip users run it.
"""

import json
import sys
import time
from pathlib import Path

import torch


def measure(items, fn, min_time=3.0):
    fn()
    start, runs = time.perf_counter(), 0
    while runs < 3 or time.perf_counter() - start < min_time:
        fn()
        runs += 1
    return runs * items / (time.perf_counter() - start)


mode, out = sys.argv[1], Path(sys.argv[2])
import open_clip  # noqa: E402

if mode == "make":
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    name = "ViT-B-16-quickgelu"
    cfg = open_clip.get_model_config(name)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None).eval()
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "open_clip_model.safetensors")
elif mode == "torch":
    inputs, threads = json.loads(Path(sys.argv[3]).read_text()), int(sys.argv[4])
    torch.set_num_threads(threads)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    tok = open_clip.get_tokenizer("ViT-B-16-quickgelu")
    rates = {}
    with torch.inference_mode():
        for name in ("short", "reports"):
            pool = inputs[name]
            for batch in (1, 8, 32):
                cursor = [0]

                def run():
                    chunk = [pool[(cursor[0] + i) % len(pool)] for i in range(batch)]
                    cursor[0] += batch
                    model.encode_text(tok(chunk), normalize=True)

                rates[f"text_{name}_b{batch}"] = measure(batch, run)
        for batch in (1, 8):
            pixels = torch.randn(batch, 3, 224, 224)
            rates[f"image_b{batch}"] = measure(batch, lambda: model.encode_image(pixels, normalize=True))
    print(json.dumps(rates))
else:
    sys.exit(f"unknown mode {mode}")
