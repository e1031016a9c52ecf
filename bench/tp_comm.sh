#!/usr/bin/env bash
# Tensor parallelism on this machine: bytes communicated per step by the tensor-parallel layers at
# tp = 2, with and without sequence parallelism, against the count the Megatron formulas predict, and
# the step time of tp = 2 (two ranks, one thread each) against one process (two threads), in fp32 and
# bf16. The quickstart model (d_model 256, 4 layers) unless ARGS says otherwise; STEPS steps (default
# 8), the first two left out of the means.
#   bench/tp_comm.sh
#   ARGS="--set model.d_model=512 --set model.n_heads=8 --set model.n_kv_heads=8" bench/tp_comm.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
steps=${STEPS:-8}
grep -m1 'model name' /proc/cpuinfo || true

# run NAME RANKS FLAGS...: trains, then prints "step_s tp_comm_bytes" (means after the warm-up) and
# the model's shape from the trace.
run() {
  local name=$1 ranks=$2 launcher=()
  shift 2
  ((ranks > 1)) && launcher=("${mpirun[@]}" -np "$ranks")
  # shellcheck disable=SC2086
  "${launcher[@]}" "$build"/ladder train recipes/quickstart.toml --set run.name="$name" \
    --set run.out_dir="$out" --set train.steps="$steps" --set train.log_every=1 \
    --set schedule.warmup=1 --set eval.every_steps=0 --set checkpoint.every_steps=0 \
    --set checkpoint.intermediate=none ${ARGS:-} "$@" >"$out/$name.log" 2>&1 ||
    { cat "$out/$name.log" >&2; exit 1; }
  "$python" - "$out/$name/trace.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as t:
    s, b = t["train/step_s"][2:], t["train/tp_comm_bytes"][2:]
    a = t.attrs
    print(f"{s.mean():.4f} {b.mean():.0f} {a['width']} {a['depth']} {a['batch_tokens']} "
          f"{a['vocab_size']}")
PY
}

# The tensor-parallel layers' bytes per step and rank under the ring model (all-reduce of S bytes:
# 2 (n - 1) / n S; all-gather or reduce-scatter: (n - 1) / n S), for a model without QK-norm.
# Megatron (Korthikanti et al. 2022, section 4.2.2): per layer 4 all-reduces of the activations
# [tokens, d] (2 forward, 2 backward), or with sequence parallelism 4 all-gathers and 4
# reduce-scatters moving the same bytes; plus here the embedding's and readout's regions, the
# cross-entropy's three reductions of one number per token, and with sequence parallelism the
# norm gains' gradient all-reduces (2 per layer and the final norm, d numbers each).
predict() {
  "$python" - "$@" <<'PY'
import sys
sp, bf16, n, d, L, T = int(sys.argv[1]), int(sys.argv[2]), 2, *map(int, sys.argv[3:6])
ar, ag = 2 * (n - 1) / n, (n - 1) / n
act = 2 if bf16 else 4          # matmul outputs (row-parallel partial sums) under autocast
f32 = 4                          # embedding output, gradients entering f, norm outputs
if not sp:
    fwd = (2 * L * act + f32) * T * d * ar             # 2 row-parallel outputs per layer + embedding
    bwd = (2 * L + 1) * f32 * T * d * ar               # f at attention, MLP and readout inputs
    extra = 3 * T * 4 * ar                              # cross-entropy: max, sum-exp, target logit
else:
    gathered = act if bf16 else f32                     # tokens gathered in bf16 under autocast
    fwd = ((2 * L + 1) * gathered + 2 * L * act + f32) * T * d * ag
    bwd = ((2 * L + 1) * gathered + 2 * L * act + f32) * T * d * ag
    extra = 3 * T * 4 * ar + (2 * L + 1) * d * 4 * ar
print(f"{fwd + bwd + extra:.0f}")
PY
}

echo
echo "| precision | layout | step ms | tp bytes per step | predicted | step vs tp=1 |"
echo "| --- | --- | --- | --- | --- | --- |"
for precision in fp32 bf16; do
  read -r base_s _ d L T _ <<<"$(run "one_$precision" 1 --threads 2 --set train.precision=$precision)"
  echo "| $precision | tp=1, 2 threads | $(awk -v s="$base_s" 'BEGIN {printf "%.0f", 1e3 * s}') | 0 | 0 | 1.00 |"
  for sp in false true; do
    read -r s b _ <<<"$(run "tp2_${sp}_$precision" 2 --threads 1 --set parallel.tp=2 \
      --set parallel.sequence_parallel=$sp --set train.precision=$precision)"
    p=$(predict "$([[ $sp == true ]] && echo 1 || echo 0)" "$([[ $precision == bf16 ]] && echo 1 || echo 0)" "$d" "$L" "$T")
    awk -v pr="$precision" -v sp="$sp" -v s="$s" -v b="$b" -v p="$p" -v base="$base_s" 'BEGIN {
      printf "| %s | tp=2%s | %.0f | %.2f MB | %.2f MB | %.2f |\n", pr,
             sp == "true" ? " + sequence parallel" : "", 1e3 * s, b / 1e6, p / 1e6, s / base }'
  done
done
