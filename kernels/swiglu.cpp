#include "kernels/swiglu.h"

#include "core/op_profile.h"
#include "kernels/cpu.h"
#include "kernels/cpu/loops.h"
#include "kernels/cuda.h"

namespace ladder::kernels {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

torch::Tensor swiglu_reference(const torch::Tensor& gate, const torch::Tensor& up) {
  return torch::silu(gate) * up;
}

namespace {

struct SwigluFunction : torch::autograd::Function<SwigluFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gate,
                               const torch::Tensor& up) {
    const torch::Tensor g = gate.contiguous(), u = up.contiguous();
    torch::Tensor out = torch::empty_like(g);
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, g.scalar_type(), "swiglu", [&] {
      LADDER_CPU_LOOP(swiglu_forward<scalar_t>)
      (g.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), g.numel(), out.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({g, u});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    LADDER_OP_CLASS("activation");
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &g = saved[0], &u = saved[1];
    const torch::Tensor dy = grad[0].to(g.scalar_type()).contiguous();
    torch::Tensor grad_gate = torch::empty_like(g), grad_up = torch::empty_like(u);
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, g.scalar_type(), "swiglu_backward", [&] {
      LADDER_CPU_LOOP(swiglu_backward<scalar_t>)
      (g.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), g.numel(),
       grad_gate.data_ptr<scalar_t>(), grad_up.data_ptr<scalar_t>());
    });
    return {grad_gate, grad_up};
  }
};

}  // namespace

torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up, bool fused) {
  LADDER_OP_CLASS("activation");
  if (fused)
    if (torch::Tensor out = cuda_swiglu(gate, up); out.defined()) return out;
  const auto t = gate.scalar_type();
  if (!fused || !gate.device().is_cpu() || !up.device().is_cpu() || !cpu_has_avx2() ||
      (t != at::kFloat && t != at::kBFloat16 && t != at::kDouble) || up.scalar_type() != t ||
      gate.sizes() != up.sizes())
    return swiglu_reference(gate, up);
  return SwigluFunction::apply(gate, up);
}

}  // namespace ladder::kernels
