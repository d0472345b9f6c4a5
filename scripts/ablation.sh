#!/usr/bin/env bash
# MIRAGE ablation on the MRI atlas at injected noise η (default 0.4): the default configuration
# (configs/study-atlas.toml: OT cost nn_t, soft NN, a queue of one epoch, adaptive balancing) and
# one change at a time — the OT cost variants (nn_t_sym, t_t, i_t, one_hot), hard NN, a queue of
# four epochs, fixed and no balancing. Every run is trained, calibrated on valid and evaluated on
# test exactly as in scripts/noise-study.sh; `mirage study-report --baseline default` then writes
# one table of each variant's paired difference to the default with its 95 % bootstrap interval
# over test queries (study.md, study.json) and one forest plot per metric (difference-*.png).
#
#   scripts/ablation.sh [--out DIR] [--seeds "0 1 2"] [--eta 0.4] [--only "hard_nn ..."]
#                       [--set key=value ...]   (extra trainer settings for every variant, e.g.
#                                                --set model.bundle=bundles/biomedclip to start
#                                                from an imported model)
#
# Resumable: a finished run (its test report exists) is skipped. ≈ 3 min per run on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

out=runs/ablation
seeds="0 1 2"
eta=0.4
only=""
extra=()
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --eta) eta="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --set) extra+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "ablation: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# name → trainer settings (the default queue, 640 rows, is one epoch of the 654-pair train split).
declare -A variants=(
  [default]=""
  [ot_nn_t_sym]="loss.ot_cost=nn_t_sym"
  [ot_t_t]="loss.ot_cost=t_t"
  [ot_i_t]="loss.ot_cost=i_t"
  [ot_one_hot]="loss.ot_cost=one_hot"
  [hard_nn]="nn.mode=hard"
  [queue_4_epochs]="queue.size=2560"
  [balance_fixed]="loss.balance=fixed"
  [balance_none]="loss.balance=none"
)
order="default ot_nn_t_sym ot_t_t ot_i_t ot_one_hot hard_nn queue_4_epochs balance_fixed balance_none"
if [[ -n "$only" ]]; then
  for v in $only; do
    [[ -v "variants[$v]" ]] || { echo "ablation: unknown variant $v (one of: $order)" >&2; exit 2; }
  done
  order="default $only"
fi

source scripts/lib/study.sh
study_setup
started=$SECONDS
for seed in $seeds; do
  for v in $order; do
    settings=()
    for s in ${variants[$v]}; do settings+=(--set "$s"); done
    study_run "$v-eta$eta-seed$seed" "$v" "$eta" "$seed" "${settings[@]}" "${extra[@]}"
  done
done
"$bin/mirage" study-report --dir "$out" --baseline default
echo "ablation: finished in $(((SECONDS - started) / 60)) min; table: $out/study.md"
