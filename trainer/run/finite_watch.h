// The sync-free step's finite check (train.sync_free_step). Each step's loss and gradient norm are
// checked on the device, which keeps the first non-finite pair; the host reads the verdict only
// when something is about to be logged, evaluated or written (the loop in trainer/run/train.cpp),
// so no step waits for the device, and a diverged run still stops on every rank alike (both
// values are the same on every rank) before any checkpoint of its state. The sync-free update
// skips a step whose norm is not finite, so the weights stay those before the first bad step.
// With train.cuda_graph the note follows each replay, on the graph's output tensors.
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace ladder {

class FiniteWatch {
 public:
  // Step `step` (0-based): its loss and gradient norm, fp64 device scalars. Steps are noted in
  // order.
  void note(int64_t step, const torch::Tensor& loss, const torch::Tensor& grad_norm);
  // Reads what was noted since the last check (one wait for the device) and stops every rank
  // alike as require_finite (trainer/run/train_step.h) does, naming the first non-finite step and
  // value. Returns the seconds it waited.
  double check();
  bool pending() const { return pending_; }

 private:
  bool pending_ = false;
  int64_t first_step_ = 0;  // the step of the first note since the last check
  torch::Tensor notes_;     // int64: notes since the last check
  torch::Tensor bad_;       // int64: the first non-finite note's index among them, or -1
  torch::Tensor values_;    // fp64 [2]: that note's loss and norm
};

}  // namespace ladder
