#include "optim/adamw.h"

#include <cmath>

namespace ladder::optim {

std::vector<ParamSegment> whole_params(const models::ParamStore& store) {
  std::vector<ParamSegment> segments;
  for (size_t i = 0; i < store.all().size(); ++i)
    segments.push_back(ParamSegment{i, 0, store.all()[i].value.numel()});
  return segments;
}

torch::Tensor segment_of(const torch::Tensor& tensor, const ParamSegment& segment) {
  return tensor.detach().view(-1).narrow(0, segment.offset, segment.length);
}

AdamW::AdamW(models::ParamStore& store, const OptimConfig& config,
             std::vector<ParamSettings> settings)
    : AdamW(store, config, std::move(settings), whole_params(store)) {}

AdamW::AdamW(models::ParamStore& store, const OptimConfig& config,
             std::vector<ParamSettings> settings, std::vector<ParamSegment> segments)
    : store_(store),
      config_(config),
      settings_(std::move(settings)),
      segments_(std::move(segments)) {
  for (const auto& s : segments_) {
    const auto& p = store_.all().at(s.param).value;
    if (s.offset < 0 || s.length < 0 || s.offset + s.length > p.numel())
      throw std::invalid_argument("AdamW: segment outside parameter " + store_.all()[s.param].name);
    m_.push_back(torch::zeros({s.length}, p.options().requires_grad(false)));
    v_.push_back(torch::zeros({s.length}, p.options().requires_grad(false)));
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++t_;
  const double b1 = config_.beta1, b2 = config_.beta2;
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(t_));
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(t_)));
  auto& params = store_.all();
  for (size_t k = 0; k < segments_.size(); ++k) {
    const ParamSegment& s = segments_[k];
    const torch::Tensor& value = params[s.param].value;
    if (!value.grad().defined()) continue;
    torch::Tensor p = segment_of(value, s);
    const torch::Tensor g = segment_of(value.grad(), s);
    const double step_lr = lr * settings_[s.param].lr_multiplier;
    m_[k].mul_(b1).add_(g, 1.0 - b1);
    v_[k].mul_(b2).addcmul_(g, g, 1.0 - b2);
    if (settings_[s.param].weight_decay > 0)
      p.mul_(1.0 - step_lr * settings_[s.param].weight_decay);
    // denominator = sqrt(v) / sqrt(1 - b2^t) + eps, then p -= lr / (1 - b1^t) * m / denominator
    torch::Tensor denom = v_[k].sqrt().div_(bias2_sqrt).add_(config_.eps);
    p.addcdiv_(m_[k], denom, -step_lr / bias1);
  }
}

double grad_square_sum(const models::ParamStore& store, const std::vector<ParamSegment>& segments) {
  torch::NoGradGuard no_grad;
  double sum = 0;
  for (const auto& s : segments) {
    const torch::Tensor& g = store.all()[s.param].value.grad();
    if (!g.defined()) continue;
    const double n = segment_of(g, s).norm().item<double>();
    sum += n * n;
  }
  return sum;
}

void clip_grads(models::ParamStore& store, const std::vector<ParamSegment>& segments, double norm,
                double max_norm) {
  if (max_norm <= 0 || !(norm > max_norm)) return;
  torch::NoGradGuard no_grad;
  const double scale = max_norm / (norm + 1e-6);
  for (const auto& s : segments) {
    const torch::Tensor& g = store.all()[s.param].value.grad();
    if (g.defined()) segment_of(g, s).mul_(scale);
  }
}

}  // namespace ladder::optim
