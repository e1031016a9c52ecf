#include "optim/adamw.h"

#include <cmath>
#include <map>
#include <optional>
#include <tuple>

#include "core/op_profile.h"
#include "kernels/adamw.h"

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
             std::vector<ParamSettings> settings, AdamWKernels kernels)
    : AdamW(store, config, std::move(settings), whole_params(store), kernels) {}

AdamW::AdamW(models::ParamStore& store, const OptimConfig& config,
             std::vector<ParamSettings> settings, std::vector<ParamSegment> segments,
             AdamWKernels kernels)
    : store_(store),
      config_(config),
      kernels_(kernels),
      settings_(std::move(settings)),
      segments_(std::move(segments)) {
  for (const auto& s : segments_) {
    const auto& p = store_.all().at(s.param).value;
    if (s.offset < 0 || s.length < 0 || s.offset + s.length > p.numel())
      throw std::invalid_argument("AdamW: segment outside parameter " + store_.all()[s.param].name);
    m_.push_back(torch::zeros({s.length}, p.options().requires_grad(false)));
    v_.push_back(torch::zeros({s.length}, p.options().requires_grad(false)));
    bf16_copies_.emplace_back();
  }
}

// The update of Loshchilov and Hutter (2019, Algorithm 2), for all segments at once with LibTorch's
// multi-tensor (_foreach_) operations: a handful of kernel launches per step on CUDA instead of
// several per parameter; on the CPU they run the same per-tensor operations in the same order
// (bitwise the same as one segment at a time).
void AdamW::step(double lr, const UpdateGuard& update_guard) {
  if (kernels_.aten_fused) {
    begin_step(lr);
    launch_update(update_guard);
    return;
  }
  LADDER_OP_CLASS("optimizer");
  torch::NoGradGuard no_grad;
  ++t_;
  if (update_guard.clip_divisor.defined() || update_guard.found_inf.defined())
    throw std::logic_error("AdamW::step: an UpdateGuard needs AdamWKernels::aten_fused");
  if (kernels_.fused && fused_step(lr)) return;
  const double b1 = config_.beta1, b2 = config_.beta2;
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(t_));
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(t_)));
  auto& params = store_.all();
  std::vector<torch::Tensor> p, g, m, v, decayed;
  std::vector<c10::Scalar> step_sizes, decay_factors, eps;
  for (size_t k = 0; k < segments_.size(); ++k) {
    const ParamSegment& s = segments_[k];
    const torch::Tensor& value = params[s.param].value;
    if (!value.grad().defined()) continue;
    const double step_lr = lr * settings_[s.param].lr_multiplier;
    p.push_back(segment_of(value, s));
    g.push_back(segment_of(value.grad(), s));
    m.push_back(m_[k]);
    v.push_back(v_[k]);
    step_sizes.emplace_back(-step_lr / bias1);
    eps.emplace_back(settings_[s.param].eps);
    if (settings_[s.param].weight_decay > 0) {
      decayed.push_back(p.back());
      decay_factors.emplace_back(1.0 - step_lr * settings_[s.param].weight_decay);
    }
  }
  if (p.empty()) return;
  at::_foreach_mul_(m, b1);
  at::_foreach_add_(m, g, 1.0 - b1);  // m = b1 m + (1 - b1) g
  at::_foreach_mul_(v, b2);
  at::_foreach_addcmul_(v, g, g, 1.0 - b2);                         // v = b2 v + (1 - b2) g^2
  if (!decayed.empty()) at::_foreach_mul_(decayed, decay_factors);  // decoupled weight decay
  // denominator = sqrt(v) / sqrt(1 - b2^t) + eps, then p -= lr / (1 - b1^t) * m / denominator
  std::vector<torch::Tensor> denom = at::_foreach_sqrt(v);
  at::_foreach_div_(denom, bias2_sqrt);
  at::_foreach_add_(denom, eps);
  at::_foreach_addcdiv_(p, m, denom, step_sizes);
}

bool AdamW::fused_step(double lr) {
  // Every segment or none: the kernel where each piece is a contiguous fp32 CPU tensor (always, on
  // the CPU: segments are flat views of contiguous parameters), else the composite for all.
  auto& params = store_.all();
  for (size_t k = 0; k < segments_.size(); ++k) {
    const torch::Tensor& value = params[segments_[k].param].value;
    if (value.grad().defined() &&
        !kernels::adamw_fusable(segment_of(value, segments_[k]),
                                segment_of(value.grad(), segments_[k]), m_[k], v_[k]))
      return false;
  }
  for (size_t k = 0; k < segments_.size(); ++k) {
    const ParamSegment& s = segments_[k];
    const torch::Tensor& value = params[s.param].value;
    if (!value.grad().defined()) continue;
    const ParamSettings& settings = settings_[s.param];
    torch::Tensor p = segment_of(value, s);
    // The bf16 copy of a parameter this rank updates whole (under ZeRO-1 the pieces of others
    // arrive by all-gather: those are cast by autocast as before).
    const bool copy = kernels_.bf16_weight_copies && s.offset == 0 && s.length == value.numel();
    if (copy && !bf16_copies_[k].defined())
      bf16_copies_[k] = torch::empty({s.length}, value.options().dtype(at::kBFloat16));
    kernels::adamw_update(p, segment_of(value.grad(), s), m_[k], v_[k],
                          {lr * settings.lr_multiplier, settings.weight_decay, config_.beta1,
                           config_.beta2, settings.eps, t_},
                          copy ? bf16_copies_[k] : torch::Tensor());
    if (copy) kernels::remember_bf16_copy(value, bf16_copies_[k]);
  }
  return true;
}

// The segments grouped by what at::_fused_adamw_ takes as one number: the learning-rate multiplier,
// the weight decay and eps (and the tensors' dtype and device, which one launch must share).
struct AdamW::Group {
  std::vector<torch::Tensor> p, g, m, v;
};

std::map<AdamW::GroupKey, AdamW::Group> AdamW::aten_groups() {
  std::map<GroupKey, Group> groups;
  auto& params = store_.all();
  for (size_t k = 0; k < segments_.size(); ++k) {
    const ParamSegment& s = segments_[k];
    const torch::Tensor& value = params[s.param].value;
    if (!value.grad().defined()) continue;
    const ParamSettings& settings = settings_[s.param];
    Group& group = groups[{settings.lr_multiplier, settings.weight_decay, settings.eps,
                           static_cast<int>(value.scalar_type()), value.device().str()}];
    group.p.push_back(segment_of(value, s));
    group.g.push_back(segment_of(value.grad(), s));
    group.m.push_back(m_[k]);
    group.v.push_back(v_[k]);
  }
  return groups;
}

void AdamW::begin_step(double lr) {
  if (!kernels_.aten_fused)
    throw std::logic_error("AdamW::begin_step needs AdamWKernels::aten_fused");
  torch::NoGradGuard no_grad;
  ++t_;
  // The numbers the kernel reads live on the device: written here by two fills (launches that
  // carry the value, ordered on the stream like the update itself, so the host never waits and
  // never overwrites a number a pending update still has to read).
  const auto on_device = (segments_.empty() ? torch::TensorOptions()
                                            : store_.all()[segments_[0].param].value.options())
                             .dtype(torch::kFloat32);
  if (!device_lr_.defined() || device_lr_.device() != on_device.device()) {
    device_lr_ = torch::zeros({}, on_device), device_steps_ = torch::zeros({}, on_device);
  }
  device_steps_.fill_(static_cast<double>(t_));
  device_lr_.fill_(lr);
}

void AdamW::launch_update(const UpdateGuard& update_guard) {
  LADDER_OP_CLASS("optimizer");
  torch::NoGradGuard no_grad;
  if (!device_lr_.defined()) throw std::logic_error("AdamW::launch_update before begin_step");
  std::optional<torch::Tensor> divisor, found_inf;
  if (update_guard.clip_divisor.defined()) divisor = update_guard.clip_divisor;
  if (update_guard.found_inf.defined()) found_inf = update_guard.found_inf;
  for (auto& [key, group] : aten_groups()) {
    const auto& [lr_multiplier, weight_decay, eps, dtype, device] = key;
    // The kernel only reads the step count: one tensor serves every parameter.
    const std::vector<torch::Tensor> steps(group.p.size(), device_steps_);
    at::_fused_adamw_(group.p, group.g, group.m, group.v, {}, steps, device_lr_ * lr_multiplier,
                      config_.beta1, config_.beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false, divisor, found_inf);
  }
}

void AdamW::reset_state() {
  torch::NoGradGuard no_grad;
  for (auto& m : m_)
    m.zero_();
  for (auto& v : v_)
    v.zero_();
  t_ = 0;
}

namespace {

// The segments' gradients that exist, as flat views.
std::vector<torch::Tensor> grad_pieces(const models::ParamStore& store,
                                       const std::vector<ParamSegment>& segments) {
  std::vector<torch::Tensor> pieces;
  for (const auto& s : segments) {
    const torch::Tensor& g = store.all()[s.param].value.grad();
    if (g.defined()) pieces.push_back(segment_of(g, s));
  }
  return pieces;
}

}  // namespace

torch::Tensor grad_square_sum_on_device(const models::ParamStore& store,
                                        const std::vector<ParamSegment>& segments,
                                        const torch::Device& device) {
  LADDER_OP_CLASS("optimizer");
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> pieces = grad_pieces(store, segments);
  if (pieces.empty()) return torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device));
  // Each piece's norm in its dtype, squared and summed in fp64.
  return torch::stack(at::_foreach_norm(pieces)).to(torch::kFloat64).square().sum();
}

double grad_square_sum(const models::ParamStore& store, const std::vector<ParamSegment>& segments) {
  if (store.all().empty()) return 0;
  return grad_square_sum_on_device(store, segments, store.all().front().value.device())
      .item<double>();
}

void clip_grads(models::ParamStore& store, const std::vector<ParamSegment>& segments, double norm,
                double max_norm) {
  if (max_norm <= 0 || !(norm > max_norm)) return;
  LADDER_OP_CLASS("optimizer");
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> pieces = grad_pieces(store, segments);
  if (!pieces.empty()) at::_foreach_mul_(pieces, max_norm / (norm + 1e-6));
}

torch::Tensor clip_divisor(const torch::Tensor& norm, double max_norm) {
  const torch::Tensor n = norm.detach().to(torch::kFloat64);
  if (max_norm <= 0) return torch::ones({}, n.options().dtype(torch::kFloat32));
  return torch::where(n > max_norm, (n + 1e-6) / max_norm, torch::ones_like(n)).to(torch::kFloat32);
}

torch::Tensor found_non_finite(const std::vector<torch::Tensor>& values) {
  torch::Tensor all_finite;
  for (const auto& v : values) {
    const torch::Tensor f = torch::isfinite(v.detach()).all();
    all_finite = all_finite.defined() ? all_finite.logical_and(f) : f;
  }
  if (!all_finite.defined()) throw std::invalid_argument("found_non_finite: no values");
  return all_finite.logical_not().to(torch::kFloat32);
}

}  // namespace ladder::optim
