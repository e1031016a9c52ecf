#!/usr/bin/env bash
# ladder's training step against the same model in eager PyTorch (Debian's python3-torch, the same
# LibTorch), side by side in one run: ROUNDS interleaved rounds (default 3), the median of each side.
# Interleaving shares the machine's drifting state (other tenants, clocks) fairly between the two.
#   bench/compare_python.sh [--d-model 512 --layers 8 --heads 8 --seq 256 --batch 8 --threads 2]
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--d-model 512 --layers 8 --heads 8 --seq 256 --batch 8 --threads 2)
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
  echo "compare_python: needs Debian's python3-torch (apt-get install python3-torch)" >&2
  exit 2
}
bin=${BUILD_DIR:-build}/bench/bench_train_step
ladder=() python=()
for ((round = 1; round <= ${ROUNDS:-3}; round++)); do
  ladder+=("$("$bin" "${args[@]}" | tee /dev/stderr | awk '/^RESULT/ {print $3}')")
  python+=("$(/usr/bin/python3 bench/train_step.py "${args[@]}" | tee /dev/stderr |
    awk '/^RESULT/ {print $3}')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
l=$(median "${ladder[@]}") p=$(median "${python[@]}")
echo "ladder tokens/s: ${ladder[*]}"
echo "python tokens/s: ${python[*]}"
awk -v l="$l" -v p="$p" 'BEGIN {printf "median: ladder %.0f tokens/s, python %.0f tokens/s, ratio %.2fx\n", l, p, l / p}'
