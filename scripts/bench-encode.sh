#!/usr/bin/env bash
# Encode throughput: mirage's two engines (ONNX Runtime, candle) next to Python onnxruntime on the
# same .onnx files and PyTorch eager, measured in one run with the same thread count and the same
# inputs (radlabels sentences ≤ 32 tokens and whole reports ≥ 100 tokens from the parity golden
# file; random 224 px images). Prints a table with the ratios (> 1 means mirage ort is faster).
# A shared machine's speed drifts by ±20 % over minutes, so the three ONNX Runtime/PyTorch
# contenders run interleaved for ROUNDS rounds and each cell is the best of its rounds
# (interference only ever slows a run down; candle, the slow pure-Rust engine, runs in the first
# round only).
#
#   scripts/bench-encode.sh [THREADS] [ROUNDS]     (defaults: all cores, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-$(nproc)}"
rounds="${2:-3}"
scripts/fetch-assets.sh >/dev/null
py=$(scripts/setup-python.sh | tail -n1)
# The Python onnxruntime reference: the same release as the library mirage loads.
"$py" -c 'import onnxruntime' 2>/dev/null || "$py" -m pip install --quiet --disable-pip-version-check onnxruntime==1.28.0
export MIRAGE_ASSETS="${MIRAGE_ASSETS:-${MIRAGE_CACHE:-$HOME/.cache/mirage}/assets}"
assets="$MIRAGE_ASSETS"
golden=model/tests/golden/minilm_radlabels.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p mirage-model --example bench_encode
bin="${CARGO_TARGET_DIR:-target}/release/examples/bench_encode"
echo "threads: $threads (ort: intra-op threads; candle: RAYON_NUM_THREADS; torch: set_num_threads)" >&2
for ((r = 1; r <= rounds; r++)); do
  echo "round $r/$rounds" >&2
  engines=ort
  ((r == 1)) && engines=ort,candle
  ours() { BENCH_ENGINES=$engines RAYON_NUM_THREADS=$threads "$bin" "$assets/minilm" "$golden" "$work" "$threads" >"$work/ours.$r"; }
  onnx() { OMP_NUM_THREADS=$threads "$py" scripts/bench/encode_ref.py onnxruntime "$assets/minilm" "$work/bundle" "$work/inputs.json" "$threads" 2>/dev/null >"$work/onnx.$r"; }
  torch() { OMP_NUM_THREADS=$threads "$py" scripts/bench/encode_ref.py torch "$assets/minilm" "$work/bundle" "$work/inputs.json" "$threads" 2>/dev/null >"$work/torch.$r"; }
  # Every contender leads in some round, so no one always runs on a machine its predecessor warmed.
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
rows = [(f"text_{k}_b{b}", f"MiniLM-L6, {'sentences ≤ 32 tokens' if k == 'short' else 'whole reports'}, batch {b}", "texts/s")
        for k in ("short", "reports") for b in (1, 8, 32)]
rows += [(f"image_b{b}", f"ResNet-50 attnpool 224 px, batch {b}", "images/s") for b in (1, 8)]
print(f"best of {rounds} interleaved rounds (candle: first round)")
print(f"| workload | unit | mirage ort | mirage candle | Python onnxruntime {onnx['version']} | PyTorch eager | ort / onnxruntime | ort / PyTorch | candle / PyTorch |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for key, name, unit in rows:
    o, c, p, t = ours["ort"][key], ours["candle"][key], onnx[key], torch[key]
    print(f"| {name} | {unit} | {o:.1f} | {c:.1f} | {p:.1f} | {t:.1f} | {o / p:.2f} | {o / t:.2f} | {c / t:.2f} |")
PY
