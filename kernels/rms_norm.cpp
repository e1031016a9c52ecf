#include "kernels/rms_norm.h"

#include "core/op_profile.h"
#include "kernels/cpu.h"
#include "kernels/cpu/loops.h"
#include "kernels/cuda.h"

namespace ladder::kernels {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& gain, double eps) {
  // At least fp32 (bf16 inputs are upcast; fp64 stays fp64).
  const torch::Tensor x32 = x.to(at::promote_types(x.scalar_type(), torch::kFloat32));
  const torch::Tensor inv_rms = torch::rsqrt(x32.square().mean(-1, /*keepdim=*/true) + eps);
  return (x32 * inv_rms).to(x.scalar_type()) * gain;
}

AddNormOutput add_rms_norm_reference(const torch::Tensor& residual, const torch::Tensor& branch,
                                     double scale, const torch::Tensor& gain, double eps) {
  const torch::Tensor sum = residual + (scale == 1.0 ? branch : branch * scale);
  return {sum, rms_norm_reference(sum, gain, eps)};
}

namespace {

at::ScalarType arithmetic_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

bool fusable(bool fused, const torch::Tensor& x, const torch::Tensor& branch,
             const torch::Tensor& gain, bool bf16_normed) {
  if (!fused || !x.device().is_cpu() || !cpu_has_avx2()) return false;
  const auto t = x.scalar_type();
  if (bf16_normed && t != at::kFloat) return false;
  if (t != at::kFloat && t != at::kBFloat16 && t != at::kDouble) return false;
  if (gain.dim() != 1 || x.dim() < 1 || gain.size(0) != x.size(-1) || !gain.device().is_cpu() ||
      gain.scalar_type() != arithmetic_type(t))
    return false;
  if (!branch.defined()) return true;
  const auto b = branch.scalar_type();
  return branch.sizes() == x.sizes() && branch.device().is_cpu() &&
         (b == t || (t == at::kFloat && b == at::kBFloat16));
}

// Runs f.template operator()<T, B, O>() for the (residual, branch, normed) storage types.
template <typename F>
void dispatch(at::ScalarType residual, at::ScalarType branch, at::ScalarType normed, F&& f) {
  using c10::BFloat16;
  if (residual == at::kFloat && normed == at::kBFloat16) {
    if (branch == at::kFloat) return f.template operator()<float, float, BFloat16>();
    return f.template operator()<float, BFloat16, BFloat16>();
  }
  if (residual == at::kFloat && branch == at::kFloat)
    return f.template operator()<float, float, float>();
  if (residual == at::kFloat) return f.template operator()<float, BFloat16, float>();
  if (residual == at::kDouble) return f.template operator()<double, double, double>();
  return f.template operator()<BFloat16, BFloat16, float>();
}

// Forward and backward on contiguous tensors; `branch` undefined: plain RMSNorm of `residual`.
struct Forward {
  torch::Tensor sum, normed, inv_rms;
};

Forward forward(const torch::Tensor& residual, const torch::Tensor& branch, double scale,
                const torch::Tensor& gain, double eps, bool bf16_normed) {
  const int64_t n = residual.size(-1), rows = residual.numel() / std::max<int64_t>(n, 1);
  const auto acc = arithmetic_type(residual.scalar_type());
  Forward out;
  if (branch.defined()) out.sum = torch::empty_like(residual);
  out.normed =
      torch::empty(residual.sizes(), residual.options().dtype(bf16_normed ? at::kBFloat16 : acc));
  out.inv_rms = torch::empty({rows}, residual.options().dtype(acc));
  const auto b_type = branch.defined() ? branch.scalar_type() : residual.scalar_type();
  dispatch(residual.scalar_type(), b_type, out.normed.scalar_type(),
           [&]<typename T, typename B, typename O>() {
             LADDER_CPU_LOOP(add_rms_norm_forward<T, B, O>)
             (residual.data_ptr<T>(), branch.defined() ? branch.data_ptr<B>() : nullptr, scale,
              gain.data_ptr<cpu::acc_t<T>>(), rows, n, eps,
              branch.defined() ? out.sum.data_ptr<T>() : nullptr, out.normed.data_ptr<O>(),
              out.inv_rms.data_ptr<cpu::acc_t<T>>());
           });
  return out;
}

// d residual, d branch (undefined without a branch), d gain.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> backward(
    const torch::Tensor& sum, const torch::Tensor& inv_rms, const torch::Tensor& gain,
    torch::Tensor grad_normed, torch::Tensor grad_sum, at::ScalarType branch_type, bool has_branch,
    double scale) {
  const int64_t n = sum.size(-1), rows = sum.numel() / std::max<int64_t>(n, 1);
  const auto acc = arithmetic_type(sum.scalar_type());
  grad_normed = grad_normed.defined() ? grad_normed.to(acc).contiguous()
                                      : torch::zeros(sum.sizes(), sum.options().dtype(acc));
  if (grad_sum.defined()) grad_sum = grad_sum.to(sum.scalar_type()).contiguous();
  torch::Tensor grad_residual = torch::empty_like(sum);
  torch::Tensor grad_branch =
      has_branch ? torch::empty(sum.sizes(), sum.options().dtype(branch_type)) : torch::Tensor();
  torch::Tensor grad_gain = torch::empty_like(gain);
  dispatch(sum.scalar_type(), branch_type, arithmetic_type(sum.scalar_type()),
           [&]<typename T, typename B, typename>() {
             using A = cpu::acc_t<T>;
             LADDER_CPU_LOOP(add_rms_norm_backward<T, B>)
             (sum.data_ptr<T>(), inv_rms.data_ptr<A>(), gain.data_ptr<A>(),
              grad_normed.data_ptr<A>(), grad_sum.defined() ? grad_sum.data_ptr<T>() : nullptr,
              scale, rows, n, grad_residual.data_ptr<T>(),
              has_branch ? grad_branch.data_ptr<B>() : nullptr, grad_gain.data_ptr<A>());
           });
  return {grad_residual, grad_branch, grad_gain};
}

struct RmsNormFunction : torch::autograd::Function<RmsNormFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& gain, double eps, bool bf16_normed) {
    const torch::Tensor input = x.contiguous(), g = gain.contiguous();
    Forward out = kernels::forward(input, {}, 1.0, g, eps, bf16_normed);
    ctx->save_for_backward({input, out.inv_rms, g});
    return out.normed;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    LADDER_OP_CLASS("norm");
    const auto saved = ctx->get_saved_variables();
    auto [grad_x, unused, grad_gain] = kernels::backward(saved[0], saved[1], saved[2], grad[0], {},
                                                         saved[0].scalar_type(), false, 1.0);
    return {grad_x, grad_gain, torch::Tensor(), torch::Tensor()};
  }
};

struct AddRmsNormFunction : torch::autograd::Function<AddRmsNormFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& residual,
                               const torch::Tensor& branch, const torch::Tensor& gain, double scale,
                               double eps, bool bf16_normed) {
    const torch::Tensor g = gain.contiguous();
    Forward out =
        kernels::forward(residual.contiguous(), branch.contiguous(), scale, g, eps, bf16_normed);
    ctx->save_for_backward({out.sum, out.inv_rms, g});
    ctx->saved_data["branch_type"] = static_cast<int64_t>(branch.scalar_type());
    ctx->saved_data["scale"] = scale;
    return {out.sum, out.normed};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    LADDER_OP_CLASS("norm");
    const auto saved = ctx->get_saved_variables();
    const auto branch_type = static_cast<at::ScalarType>(ctx->saved_data["branch_type"].toInt());
    auto [grad_residual, grad_branch, grad_gain] =
        kernels::backward(saved[0], saved[1], saved[2], grad[1], grad[0], branch_type, true,
                          ctx->saved_data["scale"].toDouble());
    return {grad_residual,   grad_branch,     grad_gain,
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& gain, double eps, bool fused,
                       bool bf16_normed) {
  LADDER_OP_CLASS("norm");
  if (fused)
    if (auto out = cuda_add_rms_norm(x, {}, 1.0, gain, eps, bf16_normed)) return out->normed;
  if (!fusable(fused, x, {}, gain, bf16_normed)) {
    const torch::Tensor normed = rms_norm_reference(x, gain, eps);
    return bf16_normed ? normed.to(at::kBFloat16) : normed;
  }
  return RmsNormFunction::apply(x, gain, eps, bf16_normed);
}

AddNormOutput add_rms_norm(const torch::Tensor& residual, const torch::Tensor& branch, double scale,
                           const torch::Tensor& gain, double eps, bool fused, bool bf16_normed) {
  LADDER_OP_CLASS("norm");
  if (fused)
    if (auto out = cuda_add_rms_norm(residual, branch, scale, gain, eps, bf16_normed)) return *out;
  if (!fusable(fused, residual, branch, gain, bf16_normed)) {
    AddNormOutput out = add_rms_norm_reference(residual, branch, scale, gain, eps);
    if (bf16_normed) out.normed = out.normed.to(at::kBFloat16);
    return out;
  }
  const auto out = AddRmsNormFunction::apply(residual, branch, gain, scale, eps, bf16_normed);
  return {out[0], out[1]};
}

}  // namespace ladder::kernels
