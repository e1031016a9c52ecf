#!/usr/bin/env bash
# ladder's training step against the same model in PyTorch 2.15 (the project's virtual environment:
# the LibTorch ladder links), interleaved in one run so that both sides share the machine's drifting
# state. For each size: ladder fp32 vs eager fp32, ladder bf16 vs eager bf16 (autocast + SDPA), and
# ladder bf16 vs torch.compile bf16; ROUNDS interleaved rounds (default 3), medians compared.
#
#   bench/compare_python.sh                      # d_model 512 and 1024, 8 layers, seq 256, batch 8
#   SIZES="512" ROUNDS=1 bench/compare_python.sh # one size, one round
#   DEVICE=cuda THREADS=8 bench/compare_python.sh
# Environment: SIZES (d_model values), LAYERS (8), ROUNDS (3), THREADS (2), DEVICE (cpu), STEPS (10),
# LADDER_VENV (~/.cache/ladder/torch-2.15.0), BUILD_DIR (build), FUSED (1: ladder's fused CPU kernels;
# 0: its LibTorch composites).
#
# ladder keeps the CPU memory it frees in the process (core/memory.h: glibc's M_MMAP_THRESHOLD and
# M_TRIM_THRESHOLD); the PyTorch side gets the same through glibc's environment variables, so that
# the comparison is of the steps' work, not of the allocator's settings.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${LADDER_VENV:-$HOME/.cache/ladder/torch-2.15.0}/bin/python3
bin=${BUILD_DIR:-build}/bench/bench_train_step
[[ -x $python ]] || { echo "compare_python: no $python; run launch/setup.sh" >&2; exit 2; }
[[ -x $bin ]] || { echo "compare_python: no $bin; run launch/setup.sh" >&2; exit 2; }
grep -m1 'model name' /proc/cpuinfo || true
echo "threads ${THREADS:-2}, device ${DEVICE:-cpu}, $(date -u +%F)"

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# Runs a benchmark, shows its output on stderr and prints its RESULT figure. The output goes through a
# file and the shell's own stderr (never a reopened /dev/stderr, which would truncate a redirected log).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
measure() {
  "$@" >"$log" 2>&1 || { cat "$log" >&2; echo "compare_python: failed: $*" >&2; exit 1; }
  cat "$log" >&2
  awk '/^RESULT/ {print $3}' "$log"
}

summary=()
for d in ${SIZES:-512 1024}; do
  common=(--d-model "$d" --layers "${LAYERS:-8}" --heads $((d / 64)) --seq 256 --batch 8
          --threads "${THREADS:-2}" --steps "${STEPS:-10}" --device "${DEVICE:-cpu}")
  # name, ladder precision, python flags
  for mode in "fp32:fp32:--precision fp32" "bf16:bf16:--precision bf16" \
              "compile-bf16:bf16:--precision bf16 --compile"; do
    IFS=: read -r name precision pyflags <<<"$mode"
    ladder=() py=()
    for ((round = 1; round <= ${ROUNDS:-3}; round++)); do
      ladder+=("$(measure "$bin" "${common[@]}" --precision "$precision" --fused "${FUSED:-1}")")
      # shellcheck disable=SC2086
      py+=("$(measure env MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647 \
              "$python" bench/train_step.py "${common[@]}" $pyflags)")
    done
    l=$(median "${ladder[@]}") p=$(median "${py[@]}")
    summary+=("$(awk -v d="$d" -v n="$name" -v l="$l" -v p="$p" -v ls="${ladder[*]}" -v ps="${py[*]}" \
      'BEGIN {printf "| %d | %s | %s | %s | %.0f | %.0f | %.2fx |", d, n, ls, ps, l, p, l / p}')")
  done
done
echo
echo "| d_model | PyTorch side | ladder tokens/s | PyTorch tokens/s | ladder median | PyTorch median | ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${summary[@]}"
