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
  // LibTorch 1.13 has no fused attention on CPU: scores, causal mask, softmax, weighted sum.
  const int64_t seq = q.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  const torch::Tensor future =
      torch::ones({seq, seq}, torch::TensorOptions().dtype(torch::kBool)).triu(1);
  torch::Tensor scores = torch::matmul(q, kk.transpose(-2, -1)).mul_(scale);
  scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(scores, -1), vv);
#endif
}

}  // namespace ladder::models
