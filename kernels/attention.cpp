#include "kernels/attention.h"

#include <ATen/autocast_mode.h>

#include "core/op_profile.h"
#include "kernels/cpu.h"
#include "kernels/cpu/loops.h"

namespace ladder::kernels {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool causal_attention_fusable(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v) {
  if (!q.device().is_cpu() || !k.device().is_cpu() || !v.device().is_cpu() || !cpu_has_avx2())
    return false;
  const bool autocast = at::autocast::is_autocast_enabled(c10::DeviceType::CPU) &&
                        at::autocast::get_autocast_dtype(c10::DeviceType::CPU) == at::kBFloat16;
  const auto t = autocast ? at::kBFloat16 : q.scalar_type();
  auto typed = [&](const torch::Tensor& x) {
    return autocast ? (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16)
                    : x.scalar_type() == t;
  };
  return (t == at::kFloat || t == at::kBFloat16 || t == at::kDouble) && typed(q) && typed(k) &&
         typed(v) && q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes() &&
         q.size(2) <= 512;
}

namespace {

// The products run in the inputs' type whatever the thread's autocast state.
struct NoAutocastCpu {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::DispatchKey::AutocastCPU};
};

void softmax_forward(torch::Tensor& scores, double scale) {
  const int64_t seq = scores.size(-1), rows = scores.numel() / seq;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, scores.scalar_type(), "causal_softmax", [&] {
    LADDER_CPU_LOOP(causal_softmax_forward<scalar_t>)
    (scores.data_ptr<scalar_t>(), rows, seq, scale, scores.data_ptr<scalar_t>());
  });
}

struct CausalAttentionFunction : torch::autograd::Function<CausalAttentionFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double scale) {
    const NoAutocastCpu no_autocast;
    torch::Tensor probs = at::matmul(q, k.transpose(-1, -2)).contiguous();  // [b, h, s, s]
    softmax_forward(probs, scale);
    ctx->save_for_backward({q, k, v, probs});
    ctx->saved_data["scale"] = scale;
    return at::matmul(probs, v);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    LADDER_OP_CLASS("attention");
    const NoAutocastCpu no_autocast;
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &probs = saved[3];
    const torch::Tensor d_out = grad[0].to(q.scalar_type());
    const torch::Tensor d_v = at::matmul(probs.transpose(-1, -2), d_out);
    torch::Tensor d_scores = at::matmul(d_out, v.transpose(-1, -2)).contiguous();  // d probs
    const int64_t seq = probs.size(-1), rows = probs.numel() / seq;
    const double scale = ctx->saved_data["scale"].toDouble();
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, probs.scalar_type(), "causal_softmax_bwd", [&] {
      LADDER_CPU_LOOP(causal_softmax_backward<scalar_t>)
      (probs.data_ptr<scalar_t>(), d_scores.data_ptr<scalar_t>(), rows, seq, scale);
    });
    return {at::matmul(d_scores, k), at::matmul(d_scores.transpose(-1, -2), q), d_v,
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double scale) {
  LADDER_OP_CLASS("attention");
  TORCH_CHECK(causal_attention_fusable(q, k, v),
              "causal_attention: inputs the fused kernel does not serve");
  if (at::autocast::is_autocast_enabled(c10::DeviceType::CPU)) {
    // As autocast would for scaled_dot_product_attention (a bf16 operation).
    auto cast = [](const torch::Tensor& x) {
      return at::autocast::cached_cast(at::kBFloat16, x, c10::DeviceType::CPU);
    };
    return CausalAttentionFunction::apply(cast(q), cast(k), cast(v), scale);
  }
  return CausalAttentionFunction::apply(q, k, v, scale);
}

}  // namespace ladder::kernels
