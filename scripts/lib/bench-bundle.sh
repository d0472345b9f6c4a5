# Shared by the benchmark scripts (sourced, not run): the MiniLM bundle they all measure, made
# once in the cache from the fetched MiniLM text weights (a seeded ResNet-18 vision tower at
# 64 px: the benchmarks time the text tower and the stores).

# bench_bundle MIRAGE CACHE ASSETS: prints the bundle's path, importing it first if missing.
bench_bundle() {
  local mirage=$1 cache=$2 assets=$3
  local bundle="$cache/bench/minilm-bundle"
  if [[ ! -f "$bundle/bundle.json" ]]; then
    "$mirage" model import-hf --text "$assets/minilm" --vision-arch resnet18 \
      --vision-pool mean --image-size 64 --model-id minilm-bench --out "$bundle" >&2
  fi
  echo "$bundle"
}
