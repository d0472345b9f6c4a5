# Shared by bench-encode.sh and bench-clip.sh (sourced, not run).
# A shared machine's speed drifts by ±20 % over minutes, so the contenders run interleaved and
# every contender leads in some round: no one always runs on a machine its predecessor warmed.

# interleave ROUNDS: calls the caller's `ours R`, `onnx R` and `torch R` in a rotating order.
interleave() {
  local rounds=$1 r
  for ((r = 1; r <= rounds; r++)); do
    echo "round $r/$rounds" >&2
    case $((r % 3)) in
      1) ours "$r"; onnx "$r"; torch "$r" ;;
      2) onnx "$r"; torch "$r"; ours "$r" ;;
      0) torch "$r"; ours "$r"; onnx "$r" ;;
    esac
  done
}
