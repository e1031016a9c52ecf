// Checkpoints (DESIGN.md contract 5): one HDF5 file per checkpoint,
// runs/NAME/checkpoints/step_XXXXXXXX.h5.
//
//   /params/<name>            every parameter at its full logical shape; attributes role and
//                             width_dims
//   /optim/exp_avg/<name>     AdamW moments, same names and shapes
//   /optim/exp_avg_sq/<name>
//   /average/params/<name>    with eval.average: the averaged weights
//                             (trainer/run/weight_average.h), and the attribute average_count
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
// Since version 2 every dataset carries a `checksum` attribute and the root an attribute
// `complete` = 1, set last: a file that was cut short, copied partly or damaged on disk is
// recognised (checkpoint_problem) and `--resume auto` falls back to the previous checkpoint. The
// checksum of a tensor is the sum, modulo 2^64, of a 64-bit mix of (element index, element bits)
// over its nonzero elements: independent of the order of the pieces, so each rank adds up the
// pieces it writes and one all-reduce gives the whole tensor's. Version-1 checkpoints (no
// checksums) are still read.
//
// Before writing, the leader checks the file system's free space and every rank its file-size limit
// against the checkpoint's size, and the leader reserves the blocks (fallocate): what does not fit
// is refused on every rank before anything is written. A write that fails anyway (permissions, an
// I/O error) abandons the file (HDF5's collective close after a failure on some ranks can hang),
// removes it, leaves every earlier checkpoint as it was, and ends the job on every rank with one
// message (ladder::AgreedError); the process then ends with _Exit (core/hdf5.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "models/model.h"
#include "optim/adamw.h"
#include "parallel/communicator.h"
#include "parallel/diloco.h"
#include "trainer/recipe/recipe.h"

namespace ladder {

class WeightAverages;

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
  int64_t islands = 0;  // read back: DiLoCo's islands, 0 for a checkpoint without an outer loop
};

// The metadata of the checkpoint at `path` (its root attributes; accounting.flops_per_token the
// only accounting read back), without reading a tensor. ladder::Error when it is missing or not a
// checkpoint.
CheckpointMeta read_checkpoint_meta(const std::string& path);

// The recipe a checkpoint was trained with, resolved for one process on the CPU (its layout set
// aside: it does not change the model).
Recipe checkpoint_recipe(const CheckpointMeta& meta, const std::string& path);

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
  // An average of the weights (eval.average, trainer/run/weight_average.h): written beside the
  // parameters and read back where the checkpoint has one. nullptr: none.
  WeightAverages* average = nullptr;
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

// The checkpoint with the highest step in run_dir/checkpoints, if any (not verified). Leftover
// temporary files from an interrupted write are ignored.
std::optional<std::string> newest_checkpoint(const std::string& run_dir);

// Why the checkpoint at `path` cannot be trusted ("cannot be read as HDF5: ...", "incomplete: ...",
// "tensor optim/exp_avg/x does not match its checksum"), or "" when it is sound. `part` of `parts`:
// the checksums of every parts-th tensor only, from the part-th on (ranks share the reading).
std::string checkpoint_problem(const std::string& path, int part = 0, int parts = 1);

// checkpoint_problem with the tensors shared over comm's ranks, the same answer on every rank.
// Collective over comm (nullptr: this process alone).
std::string agreed_checkpoint_problem(const std::string& path, const parallel::Communicator* comm);

// The newest sound checkpoint of run_dir for `--resume auto`: each candidate, newest first, is
// verified (the tensors shared over `comm`'s ranks, which agree on the outcome); a damaged one is
// reported with a warning, renamed "<name>.damaged" by rank 0 (kept for inspection, no longer a
// candidate) and the previous one is tried. nullopt when the run has no checkpoint; a run whose
// checkpoints are all damaged is an AgreedError. Collective over comm (nullptr: this process).
std::optional<std::string> newest_sound_checkpoint(const std::string& run_dir,
                                                   const parallel::Communicator* comm);

// The bytes a checkpoint of `params` takes on disk (tensors at their logical shapes; `islands` > 0:
// a DiLoCo checkpoint of that many islands), and a check that `dir`'s file system has room for it
// with a margin: a ladder::Error naming the sizes otherwise.
int64_t checkpoint_bytes(const models::ParamStore& params, int islands, bool average = false);
void check_free_space(const std::string& dir, int64_t bytes);

// Removes "*.tmp" files that an interrupted write left in run_dir/checkpoints; returns how many.
int remove_unfinished_checkpoints(const std::string& run_dir);

// Steps of the checkpoints present in run_dir/checkpoints, ascending.
std::vector<int64_t> checkpoint_steps(const std::string& run_dir);

}  // namespace ladder
