#include "trainer/run/weight_average.h"

namespace ladder {

WeightAverages::WeightAverages(WeightAverage kind, double ema_decay,
                               const models::ParamStore& params)
    : kind_(kind), ema_decay_(ema_decay) {
  for (const auto& p : params.all())
    average_.push_back(torch::zeros_like(p.value, p.value.options().requires_grad(false)));
}

void WeightAverages::update(const models::ParamStore& params) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> weights;
  for (const auto& p : params.all())
    weights.push_back(p.value.detach());
  if (count_ == 0) {
    for (size_t k = 0; k < weights.size(); ++k)
      average_[k].copy_(weights[k]);
  } else {
    // avg + w' (x - avg): the EMA's 1 - decay, or the running mean's 1 / (n + 1).
    const double w =
        kind_ == WeightAverage::Ema ? 1.0 - ema_decay_ : 1.0 / static_cast<double>(count_ + 1);
    torch::_foreach_lerp_(average_, weights, w);
  }
  ++count_;
}

double WeightAverages::evaluate_with(models::ParamStore& params,
                                     const std::function<double()>& evaluate) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> kept;
  for (size_t k = 0; k < average_.size(); ++k) {
    torch::Tensor value = params.all()[k].value.detach();
    kept.push_back(value.clone());
    value.copy_(average_[k]);
  }
  const double loss = evaluate();
  for (size_t k = 0; k < kept.size(); ++k)
    params.all()[k].value.detach().copy_(kept[k]);
  if (kind_ == WeightAverage::Window) count_ = 0;
  return loss;
}

}  // namespace ladder
