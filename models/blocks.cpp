#include "models/blocks.h"

#include <torch/version.h>

#include <cmath>

namespace ladder::models {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& gain, double eps) {
  // At least fp32 (bf16/fp16 inputs are upcast; fp64 stays fp64).
  const torch::Tensor x32 = x.to(at::promote_types(x.scalar_type(), torch::kFloat32));
  const torch::Tensor inv_rms = torch::rsqrt(x32.square().mean(-1, /*keepdim=*/true) + eps);
  return (x32 * inv_rms).to(x.scalar_type()) * gain;
}

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, int64_t max_positions, double theta) {
  const int64_t half = head_dim / 2;
  // Angles in fp64, then fp32: the table is exact to fp32 rounding even for long contexts.
  const torch::Tensor i = torch::arange(half, torch::kFloat64);
  const torch::Tensor inv_freq = torch::pow(theta, -2.0 * i / static_cast<double>(head_dim));
  const torch::Tensor pos = torch::arange(max_positions, torch::kFloat64);
  const torch::Tensor angles = torch::outer(pos, inv_freq);
  cos_ = angles.cos().to(torch::kFloat32);
  sin_ = angles.sin().to(torch::kFloat32);
}

torch::Tensor RotaryEmbedding::apply(const torch::Tensor& x) const {
  const int64_t seq = x.size(1), half = x.size(3) / 2;
  // [seq, 1, half] broadcasts over batch and heads.
  const torch::Tensor cos = cos_.slice(0, 0, seq).unsqueeze(1).to(x.scalar_type());
  const torch::Tensor sin = sin_.slice(0, 0, seq).unsqueeze(1).to(x.scalar_type());
  const torch::Tensor x1 = x.slice(-1, 0, half), x2 = x.slice(-1, half);
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v) {
  const int64_t heads = q.size(1), kv_heads = k.size(1);
  torch::Tensor kk = k, vv = v;
  if (kv_heads != heads) {  // each key/value head serves heads / kv_heads query heads
    kk = k.repeat_interleave(heads / kv_heads, 1);
    vv = v.repeat_interleave(heads / kv_heads, 1);
  }
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, kk, vv, {}, 0.0, /*is_causal=*/true);
#else
  // LibTorch 1.13 has no fused attention on CPU. Batched 3-D GEMMs run about twice as fast as 4-D
  // matmul here (which copies its transposed operand); baddbmm applies the 1/sqrt(d) scale and the
  // additive causal mask inside the GEMM instead of in separate passes over the scores.
  const int64_t batch = q.size(0), seq = q.size(2), dim = q.size(3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  const torch::Tensor q3 = q.reshape({batch * heads, seq, dim});
  const torch::Tensor k3 = kk.reshape({batch * heads, seq, dim});
  const torch::Tensor v3 = vv.reshape({batch * heads, seq, dim});
  const torch::Tensor mask =
      torch::full({seq, seq}, -std::numeric_limits<double>::infinity(), q.options()).triu(1);
  const torch::Tensor scores = torch::baddbmm(mask, q3, k3.transpose(1, 2), 1.0, scale);
  return torch::bmm(torch::softmax(scores, -1), v3).view({batch, heads, seq, dim});
#endif
}

}  // namespace ladder::models
