// `ladder sweep SWEEP.toml`: plan, then run every run of a sweep (trainer/sweep/sweep.h) that is
// not done yet, one after another, keeping the index (trainer/sweep/sweep_index.h) current; or
// write a Slurm array that runs them.
//
// The plan lists every run with N, D, FLOPs, its status and an estimated time from a measured step:
// each distinct model shape (model, data, parallel layout, batch, precision) trains 4 steps in a
// temporary folder, the same way the runs will run, and the median of its last 3 step times times
// the run's steps (plus its evaluations at 3x the training token rate) is the estimate.
//
// Running: finished runs are skipped, started ones resume from their newest checkpoint
// (`--resume auto`), a failed run's error goes to <run>/error.txt and the index, and the sweep goes
// on. In-process runs share this process (MPI as a singleton); `launch = "mpirun"` starts
// `<mpirun> -np <ranks> ladder train <recipe> --set ... --resume auto` per run, its output teed to
// <run>/console.txt. Progress after each run: runs done, failed and left, and the sweep's ETA from
// the measured time against the estimates (or the measured FLOP rate when nothing was estimated).
//
// --slurm writes <sweep>/slurm/jobs.tsv (one line per run not done: its folder and its command) and
// <sweep>/slurm/array.sbatch (one array task per line, `srun` inside; a task that finds its run
// done exits at once, one that finds it started resumes it). `ladder sweep SWEEP.toml --status`
// then rebuilds the index from the run folders.
#pragma once

#include <string>

namespace ladder {

struct SweepOptions {
  bool dry_run = false;  // plan only
  bool status = false;   // plan with each run's status, index written, nothing run
  bool slurm = false;    // write the Slurm job list and array script instead of running
  bool estimate = true;  // measure a step per model shape for the plan's times
  std::string log_level = "info";
  int* argc = nullptr;  // for MPI_Init when runs train in this process
  char*** argv = nullptr;
};

// Returns the exit status: 0 when every run is done (or nothing was to run), 1 when some run
// failed or is not done. Mistakes in the sweep file throw ladder::Error before anything starts.
int run_sweep(const std::string& path, const SweepOptions& options);

}  // namespace ladder
