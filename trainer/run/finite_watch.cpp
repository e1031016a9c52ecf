#include "trainer/run/finite_watch.h"

#include <chrono>

#include "trainer/run/train_step.h"

namespace ladder {

void FiniteWatch::note(int64_t step, const torch::Tensor& loss, const torch::Tensor& grad_norm) {
  if (!pending_) first_step_ = step, pending_ = true;
  const torch::Tensor both =
      torch::stack({loss.reshape({}), grad_norm.reshape({})}).to(torch::kFloat64);
  if (!notes_.defined() || notes_.device() != both.device()) {
    const auto on = torch::TensorOptions(torch::kInt64).device(both.device());
    notes_ = torch::zeros({}, on), bad_ = torch::full({}, -1, on);
    values_ = torch::zeros({2}, both.options());
  }
  const torch::Tensor fresh = bad_.lt(0).logical_and(both.isfinite().all().logical_not());
  bad_.copy_(torch::where(fresh, notes_, bad_));
  values_.copy_(torch::where(fresh, both, values_));
  notes_.add_(1);
}

double FiniteWatch::check() {
  if (!pending_) return 0;
  const auto start = std::chrono::steady_clock::now();
  const torch::Tensor read = torch::stack({bad_, notes_}).cpu();  // one wait
  const int64_t bad = read[0].item<int64_t>(), notes = read[1].item<int64_t>();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  pending_ = false;
  notes_.zero_(), bad_.fill_(-1);
  if (bad >= 0) {
    const torch::Tensor values = values_.cpu();
    const int64_t step = first_step_ + bad, read_after = first_step_ + notes;
    require_finite(values[0].item<double>(), "the training loss", step, read_after);
    require_finite(values[1].item<double>(), "the gradient norm", step, read_after);
  }
  return seconds;
}

}  // namespace ladder
