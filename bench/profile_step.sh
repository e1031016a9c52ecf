#!/usr/bin/env bash
# Where ladder's training step spends its time, by operator class (core/op_profile.h), with the fused
# CPU kernels (train.fused_kernels = true) and with the LibTorch composites, side by side.
#
#   bench/profile_step.sh                       # d_model 512, 8 layers, seq 256, batch 8, bf16 and fp32
#   SIZES="1024" PRECISIONS="bf16" bench/profile_step.sh
# Environment: SIZES (512), LAYERS (8), PRECISIONS ("bf16 fp32"), THREADS (2), STEPS (5), BUILD_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BUILD_DIR:-build}/bench/bench_train_step
[[ -x $bin ]] || { echo "profile_step: no $bin; run launch/setup.sh" >&2; exit 2; }
grep -m1 'model name' /proc/cpuinfo || true
echo "threads ${THREADS:-2}, $(date -u +%F)"
for d in ${SIZES:-512}; do
  for precision in ${PRECISIONS:-bf16 fp32}; do
    common=(--d-model "$d" --layers "${LAYERS:-8}" --heads $((d / 64)) --seq 256 --batch 8
            --threads "${THREADS:-2}" --steps "${STEPS:-5}" --precision "$precision" --profile 1)
    composite=$("$bin" "${common[@]}" --fused 0)
    fused=$("$bin" "${common[@]}" --fused 1)
    echo
    echo "d_model $d, $precision: composites $(awk '/^ladder  step/ {print $5}' <<<"$composite") tokens/s," \
         "fused kernels $(awk '/^ladder  step/ {print $5}' <<<"$fused") tokens/s (timed steps, no profiler)"
    echo
    echo "| class | composites ms/step | fused ms/step |"
    echo "| --- | --- | --- |"
    # Classes in the composites' order (largest first), then any only the fused run has.
    awk 'FNR == 1 {file++}
         /^profile  [a-z]+ / && $4 == "ms" {ms[file, $2] = $3; if (!($2 in seen)) {seen[$2] = 1; order[n++] = $2}}
         /^profile  [0-9]+ steps/ {step[file] = $4}
         END {for (i = 0; i < n; i++) printf "| %s | %.1f | %.1f |\n", order[i], ms[1, order[i]], ms[2, order[i]];
              printf "| whole step (profiled) | %.0f | %.0f |\n", step[1] * 1000, step[2] * 1000}' \
      <(echo "$composite") <(echo "$fused")
  done
done
