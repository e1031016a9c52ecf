// Checkpoints (DESIGN.md contract 5): one HDF5 file per checkpoint,
// runs/NAME/checkpoints/step_XXXXXXXX.h5.
//
//   /params/<name>            every parameter at its full logical shape; attributes role and
//                             width_dims
//   /optim/exp_avg/<name>     AdamW moments, same names and shapes
//   /optim/exp_avg_sq/<name>
//   /rng/torch_cpu            LibTorch's default CPU generator state
//   attributes on /           format, version, step, tokens, optimizer_steps, lr, seed,
//                             intermediate, recipe (the resolved TOML), arch, N, total, embedding
//                             and active params, FLOPs/token, rules (per parameter: role, shape,
//                             base shape, init std, lr multiplier, weight decay, eps)
//
// A DiLoCo run (parallel/diloco.h) stores the global model under /params instead, so that every
// reader of checkpoints (--init-from, inspect) sees the model the islands agree on, and beside it
//   /diloco/momentum/<name>   the outer Nesterov momentum
//   /diloco/pending/<name>    averaged pseudo-gradients received but not yet applied (streaming
//                             with overlap); attribute diloco_pending says which fragments, when
//   /islands/<i>/params/<name>, /islands/<i>/exp_avg/<name>, /islands/<i>/exp_avg_sq/<name>
//                             island i's own parameters and inner AdamW moments
// and the attribute islands. Such a checkpoint resumes with the same number of islands, at any
// layout inside them.
//
// Written to "<name>.tmp" and renamed, so a crash mid-write never damages an existing checkpoint
// and a file with the final name is complete. Readable with h5py.
//
// Every tensor is stored at its full logical shape whatever the layout (DESIGN.md contract 5). In a
// job of several ranks the file is shared through parallel HDF5: each rank writes only its shard
// (a partition of every parameter's elements across the data-parallel ranks) of the parameters and
// of the moments, and reads back the full parameters and the moments of the segments its optimizer
// updates. So a checkpoint taken at one dp size, with or without ZeRO-1, resumes at any other.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "models/model.h"
#include "optim/adamw.h"
#include "parallel/communicator.h"
#include "parallel/diloco.h"

namespace ladder {

struct CheckpointMeta {
  int64_t step = 0;    // optimizer steps completed
  int64_t tokens = 0;  // training tokens seen
  double lr = 0;       // the last learning rate applied
  uint64_t seed = 0;
  bool intermediate = false;  // kept for law fitting
  std::string recipe_toml;
  std::string arch;
  std::string precision;  // the resolved train.precision the state was trained in
  models::SizeAccounting accounting;
  // The parametrization's rules in force, one line per parameter (optim::rules_table); empty in a
  // checkpoint written before they were saved.
  std::string rules;
};

std::string checkpoint_path(const std::string& run_dir, int64_t step);

// Resuming keeps the rules a run was trained under: throws ladder::Error naming the first parameter
// whose rules differ between the checkpoint at `path` and the recipe (nothing to compare when the
// checkpoint has none).
void check_same_rules(const std::string& path, const std::string& stored,
                      const std::string& current);

// Who shares a checkpoint file and which pieces this rank writes. Pieces are of this rank's tensors
// (its tensor-parallel blocks of its pipeline stage's layers); the file holds the logical tensors
// of the whole model, each rank writing where its pieces lie in them. Replicated tensors are
// written by tensor-parallel rank 0 only, a tied embedding by the first pipeline stage only.
struct CheckpointLayout {
  const parallel::Communicator* comm = nullptr;  // every rank of the job; nullptr: this process
  std::vector<optim::ParamSegment> shard;        // this rank's pieces; with comm nullptr: ignored
  int tp_rank = 0;                               // this rank's tensor-parallel coordinate
  // DiLoCo: the outer state (its tensors are this rank's, in ParamStore order), the number of
  // islands and this rank's island. nullptr: no outer loop.
  parallel::DiLoCo* diloco = nullptr;
  int islands = 1, island = 0;
};

// Collective over layout.comm. The optimizer's segments must cover this rank's shard.
void write_checkpoint(const std::string& path, const models::ParamStore& params,
                      optim::AdamW& optimizer, const CheckpointMeta& meta,
                      const CheckpointLayout& layout = {});

// Restores parameters, the moments of the optimizer's segments and RNG state; checks every name and
// shape against the model. Returns the checkpoint's metadata (recipe text included). Collective
// over layout.comm.
CheckpointMeta read_checkpoint(const std::string& path, models::ParamStore& params,
                               optim::AdamW& optimizer, const CheckpointLayout& layout = {});

// Loads into `params` every parameter of the checkpoint at `path` (its logical tensors, this rank's
// blocks), leaving the model's other parameters as they are; returns the names it did not find
// there. A checkpoint parameter the model lacks, or has at another shape, is a ladder::Error.
// Collective over layout.comm.
std::vector<std::string> load_matching_params(const std::string& path, models::ParamStore& params,
                                              const CheckpointLayout& layout = {});

// The complete checkpoint with the highest step in run_dir/checkpoints, if any. Leftover temporary
// files from an interrupted write are ignored.
std::optional<std::string> newest_checkpoint(const std::string& run_dir);

// Steps of the checkpoints present in run_dir/checkpoints, ascending.
std::vector<int64_t> checkpoint_steps(const std::string& run_dir);

}  // namespace ladder
