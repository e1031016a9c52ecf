#include "models/blocks.h"

#include <ATen/SDPBackend.h>

#include <cmath>

#include "core/op_profile.h"
#include "kernels/attention.h"
#include "kernels/cuda.h"
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

torch::Tensor RotaryEmbedding::apply(const torch::Tensor& x, int64_t offset) const {
  LADDER_OP_CLASS("rotary");
  if (!cos_cast_.defined() || cos_cast_.device() != x.device() ||
      cos_cast_.scalar_type() != x.scalar_type()) {
    cos_cast_ = cos_.to(x.device(), x.scalar_type());
    sin_cast_ = sin_.to(x.device(), x.scalar_type());
  }
  const int64_t rows = cos_cast_.size(0) - offset;
  return kernels::rotary_reference(x, cos_cast_.narrow(0, offset, rows),
                                   sin_cast_.narrow(0, offset, rows));
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::apply_qk(const torch::Tensor& q,
                                                                  const torch::Tensor& k,
                                                                  bool fused,
                                                                  int64_t offset) const {
  if (fused && offset == 0 && q.is_cuda() && kernels::cuda_kernels_on()) {
    if (!cos_gpu_.defined() || cos_gpu_.device() != q.device())
      cos_gpu_ = cos_.to(q.device()), sin_gpu_ = sin_.to(q.device());
    if (auto out = kernels::cuda_rotary_qk(q, k, cos_gpu_, sin_gpu_)) return *out;
  }
  if (fused && offset == 0 && kernels::rotary_fusable(q, k, cos_))
    return kernels::rotary_qk(q, k, cos_, sin_);
  return {apply(q, offset), apply(k, offset)};
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
  // A prefix or a window: the explicit mask, as for a sequence with nothing cached before it.
  return cached_attention(q, k, v, scale, window, prefix);
}

std::string sdpa_backend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const auto choice = static_cast<at::SDPBackend>(at::_fused_sdp_choice(
      q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true, std::nullopt,
      /*enable_gqa=*/k.size(1) != q.size(1)));
  switch (choice) {
    case at::SDPBackend::flash_attention:
      return "flash attention";
    case at::SDPBackend::efficient_attention:
      return "memory-efficient attention";
    case at::SDPBackend::cudnn_attention:
      return "cuDNN attention";
    case at::SDPBackend::math:
      return "math (unfused)";
    case at::SDPBackend::overrideable:
      return "overrideable";
    case at::SDPBackend::error:
      break;
  }
  return "none (no backend serves these inputs)";
}

torch::Tensor cached_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double scale, int64_t window,
                               int64_t prefix) {
  LADDER_OP_CLASS("attention");
  const int64_t n = q.size(2), total = k.size(2) - prefix, past = total - n;
  // Query r sits at position past + r; key column c at c - prefix (prefix columns: negative).
  const auto options = torch::TensorOptions(torch::kInt64).device(q.device());
  const torch::Tensor row = torch::arange(past, past + n, options).unsqueeze(1);
  const torch::Tensor column = torch::arange(prefix + total, options).unsqueeze(0) - prefix;
  // Every prefix position, then the causal band (the kernel computes every score; the mask keeps
  // the allowed ones).
  torch::Tensor allowed = column <= row;
  if (window > 0) allowed = allowed & ((column > row - window) | (column < 0));
  const std::optional<double> given_scale = scale > 0 ? std::optional<double>(scale) : std::nullopt;
  return at::scaled_dot_product_attention(q, k.to(q.dtype()), v.to(q.dtype()), allowed,
                                          /*dropout_p=*/0.0, /*is_causal=*/false, given_scale,
                                          /*enable_gqa=*/k.size(1) != q.size(1));
}

}  // namespace ladder::models
