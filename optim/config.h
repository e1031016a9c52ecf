// The optimisation sections of a recipe: [optim], [schedule], [mup] (recipes/README.md documents
// each key; trainer/recipe.cpp validates).
#pragma once

#include <cstdint>
#include <string>

namespace ladder::optim {

struct OptimConfig {
  double lr = 0, weight_decay = 0, beta1 = 0, beta2 = 0, eps = 0, grad_clip = 0;
  int64_t zero = 0;
};

struct ScheduleConfig {
  std::string kind;
  int64_t warmup = 0;
  double final_lr_fraction = 0;
  double decay_fraction = 0;
  std::string decay_shape;
};

struct MupConfig {
  std::string parametrization;
  int64_t base_width = 0;
};

}  // namespace ladder::optim
