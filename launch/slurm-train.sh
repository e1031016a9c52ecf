#!/bin/bash
# One training run on Slurm that survives preemption and time limits. Slurm signals the batch
# shell (SIGUSR1, 3 minutes ahead: --signal=B:USR1@180) before it ends the job; this script passes
# the signal to the ranks, which finish their step, write a checkpoint and exit with status 3; the
# job then requeues itself, and the next start continues with --resume auto from the newest sound
# checkpoint (docs/training.md, "Surviving the cluster").
#
#   sbatch --nodes=2 --ntasks-per-node=8 --time=04:00:00 launch/slurm-train.sh recipes/mine.toml
#   sbatch --ntasks=4 --gpus-per-task=1 launch/slurm-train.sh recipes/mine.toml --set train.device=cuda
#
# Arguments after the recipe go to `ladder train`. A crash (status other than 0, 2, 3) is not
# requeued: look at the log, then submit again (or use --requeue with Slurm's own retry policy).
#SBATCH --job-name=ladder
#SBATCH --signal=B:USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -uo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: sbatch [options] launch/slurm-train.sh RECIPE [ladder train options...]" >&2
  exit 2
fi
recipe=$1
shift
ladder=${LADDER:-build/ladder}

# srun forwards SIGUSR1 and SIGTERM to every task; the ranks agree to stop after the same step.
srun --kill-on-bad-exit=1 "$ladder" train "$recipe" --resume auto "$@" &
job=$!
trap 'kill -USR1 "$job" 2>/dev/null' USR1 TERM
while true; do
  wait "$job"
  status=$?
  kill -0 "$job" 2>/dev/null || break  # `wait` returned for the trapped signal: wait again
done

if [[ $status == 3 ]]; then
  echo "slurm-train: stopped with a checkpoint; requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
