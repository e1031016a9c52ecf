#!/usr/bin/env bash
# Weak scaling of data parallelism: `ladder train` on the d_model 512 / 8-layer model with one thread
# per rank, dp=1 alone against dp=2 under mpirun, the same micro-batch per rank (so dp=2 trains on a
# global batch twice as large in, ideally, the same time). ROUNDS interleaved rounds (default 2);
# per run, tokens/s is the mean over the steps after WARMUP (default 2). Prints the efficiency
# tokens/s(dp=2) / (2 x tokens/s(dp=1)) of the medians, and dp=2's step split into compute and
# communication (rank 0's time inside communication calls, which overlap did not hide).
#   bench/dp_scaling.sh                    # STEPS=8 MICRO=1 (micro-batches per rank and step)
#   ARGS="--set optim.zero=1" bench/dp_scaling.sh      # more recipe overrides for both runs
set -euo pipefail
source "$(dirname "$0")/common.sh"
steps=${STEPS:-8} micro=${MICRO:-1} warmup=${WARMUP:-2}

# One run: `run NAME RANKS`; prints "tokens_per_s step_s comm_s comm_bytes" (means after warm-up).
run() {
  local name=$1 ranks=$2 launcher=()
  ((ranks > 1)) && launcher=("${mpirun[@]}" -np "$ranks")
  "${launcher[@]}" "$build"/ladder train recipes/quickstart.toml --threads 1 \
    --set run.name="$name" --set run.out_dir="$out" --set model.d_model=512 \
    --set model.n_layers=8 --set model.n_heads=8 --set model.n_kv_heads=8 \
    --set train.micro_batch=8 --set train.global_batch=$((8 * micro * ranks)) \
    --set train.steps="$steps" --set train.log_every=1 --set schedule.warmup=1 \
    --set eval.every_steps=0 --set checkpoint.every_steps=0 \
    --set checkpoint.intermediate=none ${ARGS:-} >"$out/$name.log" 2>&1 ||
    { cat "$out/$name.log" >&2; exit 1; }
  "$python" - "$out/$name/trace.h5" "$warmup" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as t:
    w = int(sys.argv[2])
    cols = [t["train/" + c][w:] for c in ("tokens_per_s", "step_s", "comm_s", "comm_bytes")]
    print(*(sum(c) / len(c) for c in cols))
PY
}

one=() two=() split=()
for ((round = 1; round <= ${ROUNDS:-2}; round++)); do
  r1=$(run "dp1_$round" 1) r2=$(run "dp2_$round" 2)
  echo "round $round: dp=1 ${r1%% *} tokens/s; dp=2 ${r2%% *} tokens/s (step_s comm_s comm_bytes: ${r2#* })"
  one+=("${r1%% *}") two+=("${r2%% *}") split+=("${r2#* }")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
a=$(median "${one[@]}") b=$(median "${two[@]}")
printf '%s\n' "${split[@]}" | awk -v a="$a" -v b="$b" '
  {step += $1; comm += $2; bytes += $3; n++}
  END {
    printf "median tokens/s: dp=1 %.0f, dp=2 %.0f; weak-scaling efficiency %.1f%%\n", a, b, 100 * b / (2 * a)
    printf "dp=2 step %.0f ms = compute %.0f + communication %.0f ms (%.1f%%), %.1f MB sent per rank and step\n",
      1e3 * step / n, 1e3 * (step - comm) / n, 1e3 * comm / n, 100 * comm / step, bytes / n / 1e6
  }'
