#!/usr/bin/env bash
# CLIP encode throughput: a ViT-B/16 CLIP (open_clip's ViT-B-16-quickgelu, the OpenAI layout,
# random weights) imported with `mirage model import`, run by mirage's two engines, next to
# PyTorch open_clip (encode_text / encode_image) and Python onnxruntime on the bundle's own .onnx
# files, in one run with the same thread count and inputs (radlabels sentences ≤ 32 MiniLM tokens
# and whole reports, cut at CLIP's 77; random 224 px images). Contenders run interleaved for
# ROUNDS rounds and each cell is the best of its rounds (candle: first round only), as in
# scripts/bench-encode.sh.
#
#   scripts/bench-clip.sh [THREADS] [ROUNDS]     (defaults: 2 threads, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
rounds="${2:-3}"
scripts/fetch-assets.sh >/dev/null
py=$(scripts/setup-python.sh | tail -n1)
"$py" -c 'import onnxruntime' 2>/dev/null || "$py" -m pip install --quiet --disable-pip-version-check onnxruntime==1.28.0
export MIRAGE_ASSETS="${MIRAGE_ASSETS:-${MIRAGE_CACHE:-$HOME/.cache/mirage}/assets}"
assets="$MIRAGE_ASSETS"
golden=model/tests/golden/minilm_radlabels.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p mirage-model --example bench_encode
cargo build --release -q -p mirage-server --bin mirage
bin="${CARGO_TARGET_DIR:-target}/release/examples/bench_encode"
mirage="${CARGO_TARGET_DIR:-target}/release/mirage"
echo "making a random open_clip ViT-B-16-quickgelu and importing it" >&2
"$py" scripts/bench/clip_ref.py make "$work/openclip"
"$mirage" model import --from "$work/openclip" --bpe-vocab "$assets/openclip/bpe_simple_vocab_16e6.txt.gz" \
  --out "$work/bundle" --model-id vit-b-16-random
rm -rf "$work/openclip"
echo "threads: $threads" >&2
for ((r = 1; r <= rounds; r++)); do
  echo "round $r/$rounds" >&2
  engines=ort
  ((r == 1)) && engines=ort,candle
  ours() { BENCH_ENGINES=$engines RAYON_NUM_THREADS=$threads "$bin" "$assets/minilm" "$golden" "$work" "$threads" >"$work/ours.$r"; }
  onnx() { OMP_NUM_THREADS=$threads "$py" scripts/bench/encode_ref.py onnxruntime - "$work/bundle" "$work/inputs.json" "$threads" 2>/dev/null >"$work/onnx.$r"; }
  torch() { OMP_NUM_THREADS=$threads "$py" scripts/bench/clip_ref.py torch "$work" "$work/inputs.json" "$threads" 2>/dev/null >"$work/torch.$r"; }
  case $((r % 3)) in
    1) ours; onnx; torch ;;
    2) onnx; torch; ours ;;
    0) torch; ours; onnx ;;
  esac
done
python3 - "$work" "$rounds" <<'PY'
import json, sys
from pathlib import Path
work, rounds = Path(sys.argv[1]), int(sys.argv[2])
load = lambda name: [json.loads((work / f"{name}.{r}").read_text()) for r in range(1, rounds + 1)]
best = lambda runs: {k: max(r[k] for r in runs) for k in runs[0] if k != "version"}
ours_runs, onnx_runs, torch_runs = load("ours"), load("onnx"), load("torch")
ours = {"ort": best([r["ort"] for r in ours_runs]), "candle": ours_runs[0]["candle"]}
onnx, torch = best(onnx_runs) | {"version": onnx_runs[0]["version"]}, best(torch_runs)
rows = [(f"text_{k}_b{b}", f"CLIP text, {'short sentences' if k == 'short' else 'whole reports (77 tokens)'}, batch {b}", "texts/s")
        for k in ("short", "reports") for b in (1, 8, 32)]
rows += [(f"image_b{b}", f"ViT-B/16 224 px, batch {b}", "images/s") for b in (1, 8)]
print(f"best of {rounds} interleaved rounds (candle: first round)")
print(f"| workload | unit | mirage ort | mirage candle | Python onnxruntime {onnx['version']} (our graph) | PyTorch open_clip | ort / onnxruntime | ort / open_clip | candle / open_clip |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for key, name, unit in rows:
    o, c, p, t = ours["ort"][key], ours["candle"][key], onnx[key], torch[key]
    print(f"| {name} | {unit} | {o:.1f} | {c:.1f} | {p:.1f} | {t:.1f} | {o / p:.2f} | {o / t:.2f} | {c / t:.2f} |")
PY
