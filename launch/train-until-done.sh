#!/usr/bin/env bash
# Trains a recipe to the end on machines without Slurm: reruns `ladder train RECIPE --resume auto`
# after a crash (a killed rank, an out-of-memory kill, a lost node), a bounded number of times. Each
# rerun continues from the run's newest sound checkpoint (docs/training.md, "Surviving the
# cluster").
#
#   launch/train-until-done.sh recipes/quickstart.toml
#   RANKS=4 launch/train-until-done.sh recipes/quickstart.toml --set parallel.tp=2
#   LAUNCH="mpirun -np 16 --hostfile hosts" launch/train-until-done.sh RECIPE
#
# Arguments after the recipe go to `ladder train`. Environment: RANKS (default 1: one process;
# more: `mpirun -np RANKS`), LAUNCH (the launcher command instead, e.g. an mpirun with a hostfile),
# MAX_RESTARTS (default 5), RESTART_DELAY (seconds between attempts, default 10), LADDER (the
# binary, default build/ladder).
#
# Exit status: 0 the run is complete; 2 a user error (a bad recipe, missing data, a full disk:
# rerunning would fail the same way, so it is not retried); 3 stopped by a preemption signal
# (SIGTERM or SIGUSR1, sent to the job or to this script, which passes it on: someone wants the run
# stopped, so it is not restarted); otherwise the last attempt's status once MAX_RESTARTS are spent.
set -uo pipefail

if [[ $# -lt 1 || ${1:0:1} == "-" ]]; then
  echo "usage: launch/train-until-done.sh RECIPE [ladder train options...]" >&2
  exit 2
fi
recipe=$1
shift
ladder=${LADDER:-build/ladder}
ranks=${RANKS:-1}
max_restarts=${MAX_RESTARTS:-5}
delay=${RESTART_DELAY:-10}

launcher=()
if [[ -n ${LAUNCH:-} ]]; then
  read -r -a launcher <<<"$LAUNCH"
elif ((ranks > 1)); then
  launcher=(mpirun --oversubscribe -np "$ranks")
  [[ $(id -u) == 0 ]] && launcher+=(--allow-run-as-root)
fi

child=0
stopping=0
forward() {  # a signal to this script stops the run (with its checkpoint) and the loop
  stopping=1
  ((child > 0)) && kill -"$1" "$child" 2>/dev/null
}
trap 'forward TERM' TERM INT
trap 'forward USR1' USR1

restarts=0
while true; do
  "${launcher[@]}" "$ladder" train "$recipe" --resume auto "$@" &
  child=$!
  status=0
  # `wait` returns early when a trapped signal arrives: wait again for the job's own status.
  while true; do
    wait "$child"
    status=$?
    kill -0 "$child" 2>/dev/null || break
  done
  child=0
  case $status in
    0)
      echo "train-until-done: $recipe is complete" >&2
      exit 0
      ;;
    2)
      echo "train-until-done: a user error (status 2, above): not retrying" >&2
      exit 2
      ;;
    3)
      echo "train-until-done: stopped by a preemption signal after a checkpoint (status 3);" \
        "run the same command again to continue" >&2
      exit 3
      ;;
  esac
  if ((stopping)); then
    echo "train-until-done: stopped (status $status)" >&2
    exit "$status"
  fi
  if ((restarts >= max_restarts)); then
    echo "train-until-done: the run failed with status $status after $restarts restarts;" \
      "giving up" >&2
    exit "$status"
  fi
  restarts=$((restarts + 1))
  echo "train-until-done: the run ended with status $status; restart $restarts of" \
    "$max_restarts in ${delay}s, from the newest sound checkpoint" >&2
  sleep "$delay" &
  wait $! || true
done
