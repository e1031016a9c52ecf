// Checkpoints (DESIGN.md contract 5): one HDF5 file per checkpoint,
// runs/NAME/checkpoints/step_XXXXXXXX.h5.
//
//   /params/<name>              every parameter at its full logical shape, attributes role,
//   width_dims /optim/exp_avg/<name>       AdamW moments, same names and shapes
//   /optim/exp_avg_sq/<name>
//   /rng/torch_cpu              LibTorch's default CPU generator state
//   attributes on /             format, version, step, tokens, optimizer_steps, lr, seed,
//   intermediate,
//                               recipe (the resolved TOML), arch, N, total/embedding params,
//                               FLOPs/token
//
// Written to "<name>.tmp" and renamed, so a crash mid-write never damages an existing checkpoint
// and a file with the final name is complete. Readable with h5py.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "models/model.h"
#include "optim/adamw.h"

namespace ladder {

struct CheckpointMeta {
  int64_t step = 0;    // optimizer steps completed
  int64_t tokens = 0;  // training tokens seen
  double lr = 0;       // the last learning rate applied
  uint64_t seed = 0;
  bool intermediate = false;  // kept for law fitting
  std::string recipe_toml;
  std::string arch;
  models::SizeAccounting accounting;
};

std::string checkpoint_path(const std::string& run_dir, int64_t step);

void write_checkpoint(const std::string& path, const models::ParamStore& params,
                      optim::AdamW& optimizer, const CheckpointMeta& meta);

// Restores parameters, moments and RNG state; checks every name and shape against the model.
// Returns the checkpoint's metadata (recipe text included).
CheckpointMeta read_checkpoint(const std::string& path, models::ParamStore& params,
                               optim::AdamW& optimizer);

// The complete checkpoint with the highest step in run_dir/checkpoints, if any. Leftover temporary
// files from an interrupted write are ignored.
std::optional<std::string> newest_checkpoint(const std::string& run_dir);

// Steps of the checkpoints present in run_dir/checkpoints, ascending.
std::vector<int64_t> checkpoint_steps(const std::string& run_dir);

}  // namespace ladder
