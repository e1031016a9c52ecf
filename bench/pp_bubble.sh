#!/usr/bin/env bash
# Pipeline parallelism on this machine: the measured bubble of each stage (the share of the schedule
# it spends waiting for the other stage) at pp = 2 (two ranks, one thread each) for m = 4, 8 and 16
# micro-batches, against the (pp - 1) / (m + pp - 1) of the formula (interleaved with v virtual
# stages: (pp - 1) / (v m + pp - 1)), and the peak activation memory per stage of GPipe against 1F1B.
# The quickstart model (d_model 256, 4 layers, micro-batches of 2 sequences) unless ARGS says
# otherwise; STEPS steps (default 6), the first two left out of the means.
#   bench/pp_bubble.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
steps=${STEPS:-6}
grep -m1 'model name' /proc/cpuinfo || true

# run NAME M SCHEDULE FLAGS...: trains at pp = 2, then prints the stages' mean bubble and peak
# activation bytes after the warm-up.
run() {
  local name=$1 m=$2 schedule=$3
  shift 3
  # shellcheck disable=SC2086
  "${mpirun[@]}" -np 2 "$build"/ladder train recipes/quickstart.toml --set run.name="$name" \
    --set run.out_dir="$out" --set train.steps="$steps" --set train.log_every=1 \
    --set train.micro_batch=2 --set train.global_batch=$((2 * m)) --set parallel.pp=2 \
    --set parallel.schedule="$schedule" --set schedule.warmup=1 --set eval.every_steps=0 \
    --set checkpoint.every_steps=0 --set checkpoint.intermediate=none --threads 1 ${ARGS:-} "$@" \
    >"$out/$name.log" 2>&1 || { cat "$out/$name.log" >&2; exit 1; }
  "$python" - "$out/$name/trace.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as t:
    cols = []
    for s in range(2):
        b = t[f"train/stage_bubble_{s}"][2:].mean()
        a = t[f"train/stage_activation_bytes_{s}"][2:].max()
        cols.append(f"{100 * b:5.1f}% {a / 2**20:7.1f} MiB")
    print(" | ".join(cols))
PY
}

printf '%-12s %3s %9s | %-22s | %-22s\n' schedule m formula "stage 0 bubble, act." \
  "stage 1 bubble, act."
for m in 4 8 16; do
  for schedule in gpipe 1f1b interleaved; do
    v=1 flags=()
    [[ $schedule == interleaved ]] && v=2 flags=(--set parallel.virtual_stages=2)
    formula=$("$python" -c "print(f'{100 / ($v * $m + 1):.1f}%')")
    printf '%-12s %3s %9s | %s\n' "$schedule" "$m" "$formula" \
      "$(run "${schedule}_$m" "$m" "$schedule" "${flags[@]}")"
  done
done
