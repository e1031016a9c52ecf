#include "kernels/rotary.h"

#include "core/op_profile.h"
#include "kernels/cpu.h"
#include "kernels/cpu/loops.h"

namespace ladder::kernels {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

torch::Tensor rotary_reference(const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin) {
  const int64_t seq = x.size(1), half = x.size(3) / 2;
  // [seq, 1, half] broadcasts over batch and heads.
  const torch::Tensor c = cos.slice(0, 0, seq).unsqueeze(1);
  const torch::Tensor s = sin.slice(0, 0, seq).unsqueeze(1);
  const torch::Tensor x1 = x.slice(-1, 0, half), x2 = x.slice(-1, half);
  return torch::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
}

bool rotary_fusable(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& cos) {
  if (!q.device().is_cpu() || !k.device().is_cpu() || !cos.device().is_cpu() || !cpu_has_avx2())
    return false;
  const auto t = q.scalar_type();
  return (t == at::kFloat || t == at::kBFloat16 || t == at::kDouble) && k.scalar_type() == t &&
         cos.scalar_type() == at::kFloat && q.dim() == 4 && k.dim() == 4 &&
         q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3) &&
         q.size(3) % 2 == 0 && cos.size(0) >= q.size(1) && cos.size(1) == q.size(3) / 2;
}

namespace {

torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                     int direction) {
  const torch::Tensor input = x.contiguous();
  torch::Tensor out = torch::empty_like(input);
  const int64_t rows = x.size(0) * x.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "rotary", [&] {
    LADDER_CPU_LOOP(rotary<scalar_t>)
    (input.data_ptr<scalar_t>(), cos.data_ptr<float>(), sin.data_ptr<float>(), rows, x.size(1),
     x.size(2), x.size(3), direction, out.data_ptr<scalar_t>());
  });
  return out;
}

struct RotaryQkFunction : torch::autograd::Function<RotaryQkFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& cos, const torch::Tensor& sin) {
    const torch::Tensor c = cos.contiguous(), s = sin.contiguous();
    ctx->saved_data["cos"] = c;
    ctx->saved_data["sin"] = s;
    return {rotate(q, c, s, +1), rotate(k, c, s, +1)};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    LADDER_OP_CLASS("rotary");
    const torch::Tensor c = ctx->saved_data["cos"].toTensor(),
                        s = ctx->saved_data["sin"].toTensor();
    auto rotate_back = [&](const torch::Tensor& g) {
      return g.defined() ? rotate(g, c, s, -1) : torch::Tensor();
    };
    return {rotate_back(grad[0]), rotate_back(grad[1]), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> rotary_qk(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& cos,
                                                  const torch::Tensor& sin) {
  LADDER_OP_CLASS("rotary");
  TORCH_CHECK(rotary_fusable(q, k, cos), "rotary_qk: inputs the fused kernel does not serve");
  const auto out = RotaryQkFunction::apply(q, k, cos, sin);
  return {out[0], out[1]};
}

}  // namespace ladder::kernels
