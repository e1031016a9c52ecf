// `ladder train`: the training loop, one process (data, tensor and pipeline parallelism join
// later).
#pragma once

#include <string>

#include "parallel/world.h"
#include "trainer/recipe.h"

namespace ladder {

struct TrainOptions {
  std::string resume;  // "" (fresh), "auto" (newest checkpoint of the run, else fresh), or a path
};

// Trains as the recipe says; returns the process exit status. User mistakes throw ladder::Error.
int train(const Recipe& recipe, const TrainOptions& options, const parallel::MpiWorld& world);

}  // namespace ladder
