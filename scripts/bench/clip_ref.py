"""The PyTorch open_clip half of bench-clip.sh.

    python clip_ref.py make OUT_DIR            a random ViT-B-16-quickgelu as an open_clip
                                               checkpoint directory (the OpenAI layout)
    python clip_ref.py torch OUT_DIR INPUTS_JSON THREADS
    python clip_ref.py ceiling WORK ROUNDS THREADS

`ceiling` bounds what an fp32 engine built on these kernels can reach on this CPU: it times every
matrix product of a ViT-B/16 and a 77-token CLIP text forward (the linear layers, with a bias
where CLIP has one; the patch embedding as a product; the two batched attention products) one by
one at the model's exact shapes, with PyTorch's GEMM and with ONNX Runtime's (a one-node MatMul graph), keeps the
faster of the two for each product, and adds the times up. Everything else a forward does
(LayerNorm, softmax, activations, copies) is left out, so the sum is a lower bound on a forward's
time and its inverse an upper bound on items/s. It prints that bound next to the best rounds
of mirage ort and PyTorch from WORK/{ours,torch}.R.

`torch` measures open_clip's own encode_text / encode_image (eager PyTorch, inference mode,
normalised output) on the same texts (INPUTS_JSON, written by model/examples/bench_encode.rs) and
random 224 px images, with the measuring rule of bench_encode.rs: one warm-up call, then at least
3 calls and at least 3 s. open_clip's tokenizer pads every text to the 77-token context, as
open_clip users run it.
"""

import json
import sys
from pathlib import Path

import torch
from rates import measure, text_rates


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
        rates.update(text_rates(inputs, lambda chunk: model.encode_text(tok(chunk), normalize=True)))
        for batch in (1, 8):
            pixels = torch.randn(batch, 3, 224, 224)
            rates[f"image_b{batch}"] = measure(batch, lambda: model.encode_image(pixels, normalize=True))
    print(json.dumps(rates))
elif mode == "ceiling":
    rounds, threads = int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    cfg = open_clip.get_model_config("ViT-B-16-quickgelu")
    vis, txt = cfg["vision_cfg"], cfg["text_cfg"]

    def timed(fn):
        """Seconds per call, by the shared measuring rule over at least 0.3 s."""
        return 1 / measure(1, fn, min_time=0.3)

    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1

    def ort_time(a_shape, b_shape, weight, bias=False):
        # B is a weight (an initializer) for a linear layer, a second input for attention.
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        b = np.random.randn(*b_shape).astype(np.float32)
        inputs, inits, feeds = [a], [], {"a": np.random.randn(*a_shape).astype(np.float32)}
        if weight:
            inits.append(numpy_helper.from_array(b, "b"))
        else:
            inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, b_shape))
            feeds["b"] = b
        nodes = [helper.make_node("MatMul", ["a", "b"], ["p" if bias else "y"])]
        if bias:
            inits.append(numpy_helper.from_array(np.random.randn(b_shape[-1]).astype(np.float32), "c"))
            nodes.append(helper.make_node("Add", ["p", "c"], ["y"]))
        graph = helper.make_graph(nodes, "product", inputs, [y], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return timed(lambda: session.run(None, feeds))

    def linear(m, k, n, bias=True):
        x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n) if bias else None
        secs = min(timed(lambda: torch.nn.functional.linear(x, w, b)), ort_time([m, k], [k, n], True, bias))
        return 2 * m * k * n, secs

    def bmm(g, m, k, n):
        a, b = torch.randn(g, m, k), torch.randn(g, k, n)
        return 2 * g * m * k * n, min(timed(lambda: torch.bmm(a, b)), ort_time([g, m, k], [g, k, n], False))

    def transformer(batch, tokens, width, layers, heads, mlp):
        rows, hd = batch * tokens, width // heads
        products = [linear(rows, width, 3 * width), linear(rows, width, width),
                    linear(rows, width, mlp), linear(rows, mlp, width),
                    bmm(batch * heads, tokens, hd, tokens), bmm(batch * heads, tokens, tokens, hd)]
        return [(layers * f, layers * t) for f, t in products]

    def image(batch):
        patches, width = (vis["image_size"] // vis["patch_size"]) ** 2, vis["width"]
        return ([linear(batch * patches, 3 * vis["patch_size"] ** 2, width, bias=False)]
                + transformer(batch, patches + 1, width, vis["layers"], width // 64, 4 * width)
                + [linear(batch, width, cfg["embed_dim"], bias=False)])

    def text(batch):
        width = txt["width"]
        return (transformer(batch, txt["context_length"], width, txt["layers"], txt["heads"], 4 * width)
                + [linear(batch, width, cfg["embed_dim"], bias=False)])

    best = lambda name, key: max(json.loads((out / f"{name}.{r}").read_text())[key] for r in range(1, rounds + 1))
    ours = lambda key: max(json.loads((out / f"ours.{r}").read_text())["ort"][key] for r in range(1, rounds + 1))
    print("| workload | GFLOP per item (matrix products) | ceiling: the products alone, each at the faster GEMM | "
          "mirage ort | PyTorch open_clip | mirage / ceiling | PyTorch / ceiling | most mirage / PyTorch can be |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [(f"text_reports_b{b}", f"CLIP text, whole reports (77 tokens), batch {b}", text, b, "texts/s") for b in (1, 8, 32)]
    rows += [(f"image_b{b}", f"ViT-B/16 224 px, batch {b}", image, b, "images/s") for b in (1, 8)]
    with torch.inference_mode():
        for key, name, shapes, batch, unit in rows:
            products = shapes(batch)
            flops, secs = sum(f for f, _ in products), sum(t for _, t in products)
            ceil, m, t = batch / secs, ours(key), best("torch", key)
            print(f"| {name} | {flops / batch / 1e9:.2f} | {ceil:.1f} {unit} ({flops / secs / 1e9:.0f} GFLOP/s) | "
                  f"{m:.1f} | {t:.1f} | {m / ceil:.2f} | {t / ceil:.2f} | {ceil / t:.2f} |")
else:
    sys.exit(f"unknown mode {mode}")
