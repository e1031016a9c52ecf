#include "kernels/adamw.h"

#include <cmath>

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
                  torch::Tensor& exp_avg_sq, const AdamWHyper& h) {
  TORCH_CHECK(adamw_fusable(param, grad, exp_avg, exp_avg_sq),
              "adamw_update: tensors the fused kernel does not serve");
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
   exp_avg_sq.data_ptr<float>(), param.numel(), s);
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

}  // namespace ladder::kernels
