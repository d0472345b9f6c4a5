#!/usr/bin/env bash
# One command from a fresh clone to a running MIRAGE-RS with real data:
#   1. installs what is missing (Debian: mricron-data for the brain MRI atlas, fonts for plots),
#      fetches the offline assets (MiniLM, radlabels, pydicom) and the pip torch venv;
#   2. builds `mirage` and `mirage-train`;
#   3. writes the MRI-atlas dataset (real Colin-27 T1 slices with atlas captions) and the
#      radlabels report corpus;
#   4. trains a small demo MIRAGE bundle on the atlas training split on CPU (or reuses the one a
#      previous run left in the cache);
#   5. indexes the atlas images + captions (collection `mri-atlas`) and the 1,000 radlabels
#      reports (collection `radlabels`);
#   6. serves the API and the web page on http://127.0.0.1:8080 and prints curl examples.
#
#   scripts/quickstart.sh [--port N] [--retrain] [--no-serve]
#
# Everything lives under $MIRAGE_CACHE/quickstart (default ~/.cache/mirage/quickstart); a second
# run reuses it and starts serving in seconds. --retrain trains the demo bundle again;
# --no-serve stops after indexing (and prints the serve command).
set -euo pipefail
cd "$(dirname "$0")/.."

port=8080
retrain=0
serve=1
while (($#)); do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --retrain) retrain=1; shift ;;
    --no-serve) serve=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "quickstart: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

started=$SECONDS
step() { echo "quickstart [$(((SECONDS - started) / 60))m$(((SECONDS - started) % 60))s]: $*"; }
die() { echo "quickstart: error: $*" >&2; exit 1; }

export MIRAGE_CACHE="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MIRAGE_CACHE/target}"
export CARGO_INCREMENTAL=0
qs="$MIRAGE_CACHE/quickstart"
mkdir -p "$qs"

step "checking system packages"
need_apt=()
[[ -f /usr/share/mricron/templates/aal.nii.gz ]] || need_apt+=(mricron-data)
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || need_apt+=(fonts-dejavu-core)
command -v unzip >/dev/null || need_apt+=(unzip)
command -v curl >/dev/null || need_apt+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"
  else
    die "install these Debian packages first: ${need_apt[*]}"
  fi
fi
command -v cargo >/dev/null || die "no cargo on PATH: install Rust (https://rustup.rs), 1.89 or newer"

step "fetching assets (MiniLM, radlabels, pydicom) and the torch venv"
scripts/fetch-assets.sh
source scripts/torch-env.sh

step "building mirage and mirage-train (a cold build takes several minutes)"
cargo build --locked -p mirage-cli -p mirage-trainer
bin="$CARGO_TARGET_DIR/debug"

atlas="$qs/atlas"
if [[ ! -f "$atlas/dataset.json" ]]; then
  step "writing the MRI-atlas dataset"
  "$bin/mirage" data mri-atlas --out "$atlas"
fi
if [[ ! -f "$qs/radlabels.jsonl" ]]; then
  step "writing the radlabels report corpus"
  "$bin/mirage" data radlabels --out "$qs/radlabels.jsonl"
fi

bundle="$qs/bundle"
if ((retrain)) || [[ ! -f "$bundle/bundle.json" ]]; then
  step "training the demo bundle on CPU (MiniLM + ResNet-18, 6 epochs on 654 atlas slices)"
  rm -rf "$qs/train" "$bundle" "$qs/indexes" "$qs/data"
  # The study's configuration (queue sized to the 654 training slices); no injected noise.
  "$bin/mirage-train" train --config configs/study-atlas.toml --out "$qs/train" --quiet \
    --set "data.train=$atlas/train.jsonl" --set "data.valid=$atlas/valid.jsonl" \
    --set "data.image_root=$atlas/images" --set runtime.device=auto \
    --set model.model_id=mirage-demo-atlas --export "$bundle"
else
  step "reusing the demo bundle in $bundle (--retrain to train again)"
fi

store="embedded:$qs/indexes"
# One corpus of every atlas image with its caption; the labels ride along as payload.
if [[ ! -d "$qs/indexes/mri-atlas" ]]; then
  step "indexing the atlas images and captions (collection mri-atlas)"
  cat "$atlas/train.jsonl" "$atlas/valid.jsonl" "$atlas/test.jsonl" >"$qs/atlas-all.jsonl"
  "$bin/mirage" index build --bundle "$bundle" --corpus "$qs/atlas-all.jsonl" --format pmcoa \
    --image-root "$atlas/images" --collection mri-atlas --store "$store" --progress quiet
fi
if [[ ! -d "$qs/indexes/radlabels" ]]; then
  step "indexing the radlabels reports (collection radlabels)"
  "$bin/mirage" index build --bundle "$bundle" --corpus "$qs/radlabels.jsonl" --format jsonl \
    --collection radlabels --store "$store" --progress quiet
fi

serve_cmd=("$bin/mirage" serve --bundle "$bundle" --store "$store" --data-dir "$qs/data"
  --media-root "$atlas/images" --host 127.0.0.1 --port "$port")
if ((!serve)); then
  step "ready; serve with: ${serve_cmd[*]}"
  exit 0
fi

step "starting the server"
"${serve_cmd[@]}" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
base="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  curl -fs "$base/ready" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || die "the server exited; see its log above"
  sleep 1
done
curl -fs "$base/ready" >/dev/null || die "the server did not become ready in 120 s"
example="$atlas/images/$(head -1 "$atlas/test.jsonl" | sed 's/.*"image":"\([^"]*\)".*/\1/')"
step "serving; open $base/ in a browser (Ctrl-C stops)"
cat <<EOF

Ready-to-paste examples:

# Search the atlas captions by text
curl -s $base/v1/search -H 'content-type: application/json' \\
  -d '{"collection": "mri-atlas", "query": {"text": "coronal MRI slice through the left hippocampus"}, "limit": 3}'

# Search atlas images with an image file (multipart upload)
curl -s $base/v1/search -F 'request={"collection": "mri-atlas", "query": {}, "target": "image", "limit": 3}' \\
  -F 'query.image=@$example'

# Zero-shot classification of an image
curl -s $base/v1/classify -F 'request={"labels": ["axial", "coronal", "sagittal"], "templates": ["{} MRI slice of the brain"]}' \\
  -F 'image=@$example'

# Report retrieval and MM-RAG context from the radlabels reports
curl -s $base/v1/rag/context -H 'content-type: application/json' \\
  -d '{"collection": "radlabels", "question": "large right pleural effusion", "k": 3, "min_score": 0}'

# API description
curl -s $base/openapi.json | head -c 300; echo

EOF
wait $server
