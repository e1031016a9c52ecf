// A branch of a run (`ladder train RECIPE --branch-from CHECKPOINT`): a new run that starts from
// another run's checkpoint with everything a resume restores (weights, AdamW state, data position,
// RNG) and goes on to its own length, typically a cooldown. With a warmup-stable-decay schedule,
// one stable run and a short cooldown branched from each of its checkpoints give the loss of a run
// of every length (Haegele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
// Training Durations"; Hu et al. 2024, MiniCPM): the law's points without a run each.
//
// A branch is a run of its length: the steps it shares with its parent must be the steps that run
// would have taken. So its recipe may differ from the parent's only in its length, the end of its
// schedule, where it writes and how often, and how it runs (layout, threads, kernels: checkpoints
// are logical); and its learning rate must equal the parent's at every step before the branch
// step. Anything else is refused, naming the key. Its trace holds its own rows from the branch step
// on, their tokens and FLOPs the true totals (the parent's and its own), with the parent, the
// branch step and the parent's FLOPs up to it as attributes. The origin is recorded in the run
// folder (branch.toml), so that `--resume auto` continues a branch as any run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/attributes.h"
#include "trainer/recipe/recipe.h"

namespace ladder {

struct Branch {
  std::string checkpoint;   // the parent's checkpoint the branch starts from
  std::string parent_run;   // the folder of the run that wrote it
  int64_t step = 0;         // the branch step: optimizer steps in the checkpoint
  int64_t tokens = 0;       // training tokens in the checkpoint
  double parent_flops = 0;  // the training FLOPs up to the branch step (tokens x FLOPs per token)
};

// The recipe keys a branch may give other values than its parent: its length and the end of its
// schedule (schedule.kind included: the learning rates are compared step by step), where it writes
// and how often, and how it runs.
const std::vector<std::string>& branch_free_keys();

// Reads the checkpoint's metadata and checks that `recipe` may branch from it (above); throws
// ladder::Error ("--branch-from PATH: model.d_model differs from the parent's: ...") otherwise.
// Reads attributes only: the checkpoint's tensors are verified when the run restores them.
Branch check_branch(const Recipe& recipe, const std::string& checkpoint);

// The run folder's record of its origin: run_dir/branch.toml, written when a branch starts.
void write_branch_record(const Branch& branch, const std::string& run_dir);
std::optional<Branch> read_branch_record(const std::string& run_dir);

// The trace attributes of a run's origin: branch_of, branch_checkpoint, branch_step and
// parent_flops ("", "", 0, 0 for a run that started from scratch).
Attributes branch_attributes(const std::optional<Branch>& branch);

}  // namespace ladder
