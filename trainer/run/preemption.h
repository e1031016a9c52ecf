// Preemption: a cluster asks a job to stop (Slurm sends SIGUSR1 or SIGTERM ahead of the kill when
// `--signal` says so; mpirun forwards SIGUSR1 to every rank; a single process gets SIGTERM from
// `kill` or systemd). The handler only records the signal; the training loop checks it after every
// step, every rank agrees (one rank's signal stops all), the job writes a checkpoint and exits with
// kExitStoppedBySignal, which launch/slurm-train.sh requeues and `--resume auto` continues.
#pragma once

namespace ladder {

// The exit status of a run stopped by a preemption signal after writing its checkpoint. Distinct
// from 0 (finished), kExitUserError (2: a mistake, do not retry) and a crash (retry).
constexpr int kExitStoppedBySignal = 3;

// Installs the handlers for SIGTERM and SIGUSR1 (idempotent). The first signal is recorded; a
// second of the same kind ends the process at once (its default action), for a user who insists.
void install_preemption_handlers();

// The first preemption signal this process received, or 0.
int preemption_signal();

// "SIGTERM", "SIGUSR1", or "signal N".
const char* signal_name(int signal);

}  // namespace ladder
