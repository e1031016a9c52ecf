// An average of the weights, evaluated beside the weights at every evaluation (eval.average): the
// loss a stable run would reach with its weights averaged, at every point of the run and with no
// cooldown (Haegele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
// Durations", section 5: weight averaging gives much of a cooldown's gain for free; Izmailov et
// al. 2018 for the window average).
//
//   ema      avg <- decay x avg + (1 - decay) x w after every step (avg = w after the first)
//   window   the mean of w after each step since the previous evaluation (restarted after it)
//
// Training never sees it: the average is kept in fp32 beside this rank's parameters (its tensor-
// and pipeline-parallel blocks), the evaluation puts it into the parameters and then the weights
// back, bitwise. Checkpoints hold it (/average/params, attribute average_count), so a resumed run
// continues the same average; a checkpoint without one (a branch from a run that kept none)
// starts it afresh.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "models/params.h"
#include "trainer/recipe/recipe.h"

namespace ladder {

class WeightAverages {
 public:
  WeightAverages(WeightAverage kind, double ema_decay, const models::ParamStore& params);

  // After each optimizer step.
  void update(const models::ParamStore& params);
  // `evaluate()` with the averaged weights in `params`; the weights are back afterwards, bitwise.
  // A window average restarts after it.
  double evaluate_with(models::ParamStore& params, const std::function<double()>& evaluate);

  WeightAverage kind() const { return kind_; }
  // For checkpoints: the average of parameter k (ParamStore order, its local shape, fp32), and the
  // steps averaged so far (0: nothing yet).
  torch::Tensor& average(size_t k) { return average_[k]; }
  int64_t& count() { return count_; }

 private:
  WeightAverage kind_;
  double ema_decay_;
  std::vector<torch::Tensor> average_;
  int64_t count_ = 0;
};

}  // namespace ladder
