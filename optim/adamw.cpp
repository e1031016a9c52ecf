#include "optim/adamw.h"

#include <cmath>

namespace ladder::optim {

AdamW::AdamW(models::ParamStore& store, const OptimConfig& config,
             std::vector<ParamSettings> settings)
    : store_(store), config_(config), settings_(std::move(settings)) {
  for (const auto& p : store_.all()) {
    m_.push_back(torch::zeros_like(p.value, torch::MemoryFormat::Contiguous));
    v_.push_back(torch::zeros_like(p.value, torch::MemoryFormat::Contiguous));
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++t_;
  const double b1 = config_.beta1, b2 = config_.beta2;
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(t_));
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(t_)));
  auto& params = store_.all();
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor& p = params[i].value;
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    const double step_lr = lr * settings_[i].lr_multiplier;
    m_[i].mul_(b1).add_(g, 1.0 - b1);
    v_[i].mul_(b2).addcmul_(g, g, 1.0 - b2);
    if (settings_[i].weight_decay > 0) p.mul_(1.0 - step_lr * settings_[i].weight_decay);
    // denominator = sqrt(v) / sqrt(1 - b2^t) + eps, then p -= lr / (1 - b1^t) * m / denominator
    torch::Tensor denom = v_[i].sqrt().div_(bias2_sqrt).add_(config_.eps);
    p.addcdiv_(m_[i], denom, -step_lr / bias1);
  }
}

double global_grad_norm(const models::ParamStore& store) {
  torch::NoGradGuard no_grad;
  double sum = 0;
  for (const auto& p : store.all()) {
    if (p.value.grad().defined()) {
      const double n = p.value.grad().norm().item<double>();
      sum += n * n;
    }
  }
  return std::sqrt(sum);
}

void clip_grad_norm(models::ParamStore& store, double norm, double max_norm) {
  if (max_norm <= 0 || !(norm > max_norm)) return;
  torch::NoGradGuard no_grad;
  const double scale = max_norm / (norm + 1e-6);
  for (auto& p : store.all())
    if (p.value.grad().defined()) p.value.mutable_grad().mul_(scale);
}

}  // namespace ladder::optim
