#!/bin/bash
# Runs a sweep on a Slurm cluster as a job array: one array task per run not done yet, each task a
# `srun ladder train ... --resume auto` of --ntasks = sweep.ranks ranks (recipes/sweeps/README.md).
#
#   launch/slurm-sweep.sh recipes/sweeps/chinchilla-tiny.toml                     # submit
#   launch/slurm-sweep.sh recipes/sweeps/mine.toml --partition=gpu --gpus-per-task=1 --time=04:00:00
#   build/ladder sweep recipes/sweeps/mine.toml --status                          # afterwards: the index
#
# Options after the sweep file go to sbatch (they override the script's #SBATCH lines): a partition,
# a time limit, GPUs, `--array=0-11%4` to run at most 4 runs at once. Submitting again after a
# preemption or a time limit continues: finished runs are skipped, started ones resume from their
# newest checkpoint. Run it from the folder the recipes' paths are relative to (the repository).
set -euo pipefail

if [ $# -lt 1 ] || [ "${1:0:1}" = "-" ]; then
  echo "usage: launch/slurm-sweep.sh SWEEP.toml [sbatch options...]" >&2
  exit 2
fi
sweep=$1
shift
ladder=${LADDER:-build/ladder}

# Validates every run, writes <sweep>/slurm/jobs.tsv and array.sbatch, and prints where.
out=$("$ladder" sweep "$sweep" --slurm)
echo "$out"
script=$(echo "$out" | sed -n 's/^script *//p')
if [ -z "$script" ]; then
  exit 0  # every run is done
fi
sbatch "$@" "$script"
