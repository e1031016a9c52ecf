#include "kernels/adamw.h"

#include <ATen/autocast_mode.h>

#include <cmath>
#include <mutex>
#include <unordered_map>

#include "kernels/cpu.h"
#include "kernels/cpu/loops.h"

namespace ladder::kernels {

bool adamw_fusable(const torch::Tensor& param, const torch::Tensor& grad,
                   const torch::Tensor& exp_avg, const torch::Tensor& exp_avg_sq) {
  if (!cpu_has_avx2()) return false;
  for (const torch::Tensor* t : {&param, &grad, &exp_avg, &exp_avg_sq})
    if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_contiguous() ||
        t->numel() != param.numel())
      return false;
  return true;
}

void adamw_update(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                  torch::Tensor& exp_avg_sq, const AdamWHyper& h, const torch::Tensor& bf16_copy) {
  TORCH_CHECK(adamw_fusable(param, grad, exp_avg, exp_avg_sq),
              "adamw_update: tensors the fused kernel does not serve");
  TORCH_CHECK(!bf16_copy.defined() ||
                  (bf16_copy.scalar_type() == at::kBFloat16 && bf16_copy.is_contiguous() &&
                   bf16_copy.device().is_cpu() && bf16_copy.numel() == param.numel()),
              "adamw_update: the bf16 copy must be a contiguous bf16 CPU tensor of the same size");
  const double t = static_cast<double>(h.step);
  const cpu::AdamWScalars s{
      static_cast<float>(h.beta1),
      static_cast<float>(h.beta2),
      static_cast<float>(h.lr / (1.0 - std::pow(h.beta1, t))),
      static_cast<float>(1.0 - h.lr * h.weight_decay),
      static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, t))),
      static_cast<float>(h.eps),
  };
  LADDER_CPU_LOOP(adamw)
  (param.data_ptr<float>(), grad.data_ptr<float>(), exp_avg.data_ptr<float>(),
   exp_avg_sq.data_ptr<float>(), param.numel(), s,
   bf16_copy.defined() ? bf16_copy.data_ptr<c10::BFloat16>() : nullptr);
}

void adamw_update_reference(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                            torch::Tensor& exp_avg_sq, const AdamWHyper& h) {
  torch::NoGradGuard no_grad;
  const double t = static_cast<double>(h.step);
  exp_avg.mul_(h.beta1).add_(grad, 1.0 - h.beta1);
  exp_avg_sq.mul_(h.beta2).addcmul_(grad, grad, 1.0 - h.beta2);
  if (h.weight_decay > 0) param.mul_(1.0 - h.lr * h.weight_decay);
  const torch::Tensor denominator =
      exp_avg_sq.sqrt().div_(std::sqrt(1.0 - std::pow(h.beta2, t))).add_(h.eps);
  param.addcdiv_(exp_avg, denominator, -h.lr / (1.0 - std::pow(h.beta1, t)));
}

namespace {

struct Bf16Copy {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> weight;
  torch::Tensor copy;
  uint32_t version = 0;
};

struct Bf16Copies {
  std::mutex mutex;
  std::unordered_map<const c10::TensorImpl*, Bf16Copy> by_weight;
};

Bf16Copies& bf16_copies() {
  static Bf16Copies c;
  return c;
}

// Forward: the copy (viewed, so that the output is not the input); backward: the gradient to fp32,
// for the weight.
struct UseBf16Copy : torch::autograd::Function<UseBf16Copy> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& weight,
                               const torch::Tensor& copy) {
    return copy.view(weight.sizes());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grad) {
    return {grad[0].to(at::kFloat), torch::Tensor()};
  }
};

}  // namespace

void remember_bf16_copy(const torch::Tensor& weight, const torch::Tensor& copy) {
  Bf16Copies& c = bf16_copies();
  const std::lock_guard lock(c.mutex);
  // A weight seen for the first time (a new model): entries of weights that no longer exist go
  // first. Every later step only refreshes its entries, with no scan of the map.
  if (!c.by_weight.count(weight.unsafeGetTensorImpl()))
    std::erase_if(c.by_weight, [](const auto& e) { return e.second.weight.expired(); });
  c.by_weight.insert_or_assign(
      weight.unsafeGetTensorImpl(),
      Bf16Copy{c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(
                   weight.getIntrusivePtr()),
               copy, weight._version()});
}

torch::Tensor bf16_weight(const torch::Tensor& weight) {
  if (!weight.device().is_cpu() || weight.scalar_type() != at::kFloat ||
      !at::autocast::is_autocast_enabled(c10::DeviceType::CPU) ||
      at::autocast::get_autocast_dtype(c10::DeviceType::CPU) != at::kBFloat16)
    return weight;
  torch::Tensor copy;
  {
    Bf16Copies& c = bf16_copies();
    const std::lock_guard lock(c.mutex);
    const auto found = c.by_weight.find(weight.unsafeGetTensorImpl());
    if (found == c.by_weight.end() ||
        found->second.weight.lock().get() != weight.unsafeGetTensorImpl() ||
        found->second.version != weight._version())
      return weight;
    copy = found->second.copy;
  }
  return UseBf16Copy::apply(weight, copy);
}

}  // namespace ladder::kernels
