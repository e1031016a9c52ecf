#include "models/blocks.h"

#include <cmath>

#include "core/op_profile.h"
#include "kernels/attention.h"
#include "kernels/rotary.h"

namespace ladder::models {

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
  LADDER_OP_CLASS("rotary");
  if (!cos_cast_.defined() || cos_cast_.device() != x.device() ||
      cos_cast_.scalar_type() != x.scalar_type()) {
    cos_cast_ = cos_.to(x.device(), x.scalar_type());
    sin_cast_ = sin_.to(x.device(), x.scalar_type());
  }
  return kernels::rotary_reference(x, cos_cast_, sin_cast_);
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::apply_qk(const torch::Tensor& q,
                                                                  const torch::Tensor& k,
                                                                  bool fused) const {
  if (fused && kernels::rotary_fusable(q, k, cos_)) return kernels::rotary_qk(q, k, cos_, sin_);
  return {apply(q), apply(k)};
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double scale, int64_t window, int64_t prefix,
                               bool fused) {
  LADDER_OP_CLASS("attention");
  if (fused && prefix == 0 && (window == 0 || window >= q.size(2)) &&
      kernels::causal_attention_fusable(q, k, v))
    return kernels::causal_attention(
        q, k, v, scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(q.size(3))));
  // The fused kernel of the device (flash attention on CUDA and CPU); enable_gqa lets each
  // key/value head serve heads / kv_heads query heads without materialising the repeats.
  const std::optional<double> given_scale = scale > 0 ? std::optional<double>(scale) : std::nullopt;
  const bool gqa = k.size(1) != q.size(1);
  const int64_t seq = q.size(2);
  if (prefix == 0 && (window == 0 || window >= seq))
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                            /*is_causal=*/true, given_scale, gqa);
  // An explicit mask [seq, prefix + seq]: every prefix position, then the causal band (the kernel
  // computes every score; the mask keeps the allowed ones).
  const auto options = torch::TensorOptions(torch::kInt64).device(q.device());
  const torch::Tensor row = torch::arange(seq, options).unsqueeze(1);
  const torch::Tensor column = torch::arange(prefix + seq, options).unsqueeze(0) - prefix;
  const torch::Tensor distance = row - column;
  torch::Tensor allowed = column.lt(0).logical_or(distance.ge(0));
  if (window > 0) allowed = allowed.logical_and(column.lt(0).logical_or(distance.lt(window)));
  return at::scaled_dot_product_attention(q, k, v, allowed, 0.0, /*is_causal=*/false, given_scale,
                                          gqa);
}

}  // namespace ladder::models
