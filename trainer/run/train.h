// `ladder train`: the training loop, one process (data, tensor and pipeline parallelism join
// later).
#pragma once

#include <string>

#include "parallel/world.h"
#include "trainer/recipe/recipe.h"

namespace ladder {

struct TrainOptions {
  std::string resume;  // "" (fresh), "auto" (newest checkpoint of the run, else fresh), or a path
  // A checkpoint of another run whose parameters start this one where names and shapes match (the
  // rest initialised as usual; optimizer state, step and data order fresh): ParScale's second
  // stage from a dense first stage (Chen et al. 2025).
  std::string init_from;
  // A checkpoint of another run to branch from (trainer/run/branch.h): its whole state restored, a
  // new run folder, the branch's own length and schedule end. A branch's folder remembers it, so
  // `--resume auto` alone continues a branch.
  std::string branch_from;
  std::string recipe_path;  // for the message that says how to continue a stopped run
};

// Trains as the recipe says; returns the process exit status: 0, or kExitStoppedBySignal after a
// preemption signal (trainer/run/preemption.h). User mistakes throw ladder::Error.
int train(const Recipe& recipe, const TrainOptions& options, const parallel::MpiWorld& world);

}  // namespace ladder
