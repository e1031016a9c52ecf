// The state of a sweep's runs, read from their folders, and the sweep index written from it.
//
// A run's state is never kept anywhere but in its folder, so that any process (this one, a Slurm
// array task, a sweep killed and started again) sees the same thing:
//   done     a checkpoint at the run's last step exists
//   failed   not done, and <run>/error.txt holds the error of its last attempt
//   partial  not done, but the run has started (a trace or checkpoints): it resumes
//   pending  nothing yet
//   running  (index only) the run this sweep is running now
//
// The index, rewritten atomically after every change, one row per run in plan order:
//   index.csv  run, status, every varied and derived key, N, N_total, flops_per_token, D (tokens
//              the run trains on), C (its FLOPs, as a run of its own), flops_spent (what the sweep
//              spends for it: C, or with [cooldown] its cooldown and its share of the stable run),
//              branched_from (with [cooldown]: stable_run@step, or empty), kind (run or cooldown:
//              what the fitter takes the points as, scaling/points.h), steps, steps_done,
//              tokens_seen, final_loss, final_val_loss, best_val_loss, elapsed_s, trace (relative
//              to the sweep folder), error
//   stable.csv with [cooldown]: the same columns for the stable runs (kind "stable")
//   index.h5   the same columns as 1-D datasets (numbers as float64, text as strings) under
//              /runs, with attributes format = "ladder-sweep-index", sweep (the sweep file's text)
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "trainer/sweep/sweep.h"

namespace ladder {

struct RunState {
  std::string status = "pending";
  std::string error;       // failed: the last attempt's message
  int64_t steps_done = 0;  // the newest checkpoint's step
  double tokens_seen = 0;
  double final_loss = std::numeric_limits<double>::quiet_NaN();
  double final_val_loss = std::numeric_limits<double>::quiet_NaN();
  double best_val_loss = std::numeric_limits<double>::quiet_NaN();
  double elapsed_s = std::numeric_limits<double>::quiet_NaN();  // the trace's last elapsed time
  bool has_trace = false;
};

RunState read_run_state(const SweepRun& run);

// Refuses a run folder that holds a run of another recipe (the sweep file changed under it):
// ladder::Error naming the first key that differs.
void check_run_folder(const SweepRun& run);

// Records the error of a failed attempt (<run>/error.txt), or clears it after a success.
void record_run_error(const SweepRun& run, const std::string& error);

void write_index(const Sweep& sweep, const std::vector<RunState>& states);

// Whether `name` is one of the index's own columns (run, status, N, D, C, ...), which sweep
// variables may not take.
bool is_index_column(const std::string& name);

}  // namespace ladder
