"""The table of bench-encode.sh and bench-clip.sh: each contender's best of its interleaved rounds
(candle: first round only) and the ratios, from WORK/{ours,onnx,torch}.R.

    python encode_table.py WORK ROUNDS TORCH_LABEL TEXT_MODEL IMAGE_MODEL REPORTS_LABEL
"""

import json
import sys
from pathlib import Path

work, rounds = Path(sys.argv[1]), int(sys.argv[2])
torch_label, text_model, image_model, reports = sys.argv[3:7]
load = lambda name: [json.loads((work / f"{name}.{r}").read_text()) for r in range(1, rounds + 1)]
best = lambda runs: {k: max(r[k] for r in runs) for k in runs[0] if k != "version"}
ours_runs, onnx_runs, torch_runs = load("ours"), load("onnx"), load("torch")
ours = {"ort": best([r["ort"] for r in ours_runs]), "candle": ours_runs[0]["candle"]}
onnx, torch = best(onnx_runs) | {"version": onnx_runs[0]["version"]}, best(torch_runs)
rows = [(f"text_{k}_b{b}", f"{text_model}, {'short sentences' if k == 'short' else reports}, batch {b}", "texts/s")
        for k in ("short", "reports") for b in (1, 8, 32)]
rows += [(f"image_b{b}", f"{image_model}, batch {b}", "images/s") for b in (1, 8)]
print(f"best of {rounds} interleaved rounds (candle: first round)")
print(f"| workload | unit | mirage ort | mirage candle | Python onnxruntime {onnx['version']} (our graph) "
      f"| {torch_label} | ort / onnxruntime | ort / {torch_label} | candle / {torch_label} |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for key, name, unit in rows:
    o, c, p, t = ours["ort"][key], ours["candle"][key], onnx[key], torch[key]
    print(f"| {name} | {unit} | {o:.1f} | {c:.1f} | {p:.1f} | {t:.1f} | {o / p:.2f} | {o / t:.2f} | {c / t:.2f} |")
