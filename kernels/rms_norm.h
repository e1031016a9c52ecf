// RMSNorm (Zhang and Sennrich 2019), alone or fused with the residual add before it:
//   s = residual + scale x branch,   normed = s / sqrt(mean(s^2) + eps) x gain   (last dimension)
// A pre-norm block adds each branch to the residual stream and normalises the result for the next
// branch: the fused kernel reads residual and branch once and writes the sum and the normed
// activations in the same pass, where the composite makes six passes (add, square, mean, rsqrt,
// two products). Statistics are fp32 (fp64 for fp64 inputs); normed has the type of the
// composite's result, promote(residual, gain).
//
// Backward (g = gain, inv = 1 / rms, dy = d normed, n = the row's size):
//   d s_j    = inv dy_j g_j - inv^3 s_j (sum_k dy_k g_k s_k) / n  (+ d sum_j from the stream's use)
//   d gain_j = sum over rows of dy_j s_j inv
//   d residual = d s,  d branch = scale x d s
#pragma once

#include <torch/torch.h>

namespace ladder::kernels {

struct AddNormOutput {
  torch::Tensor sum;     // residual + scale x branch, in residual's type
  torch::Tensor normed;  // RMSNorm(sum) x gain
};

// The fused kernel where it serves the inputs (fused, on a CPU with AVX2, contiguous or not; fp32,
// bf16 or fp64 rows; gain in the rows' arithmetic type; branch of the residual's type or bf16 on an
// fp32 residual), else the LibTorch composite below.
// `bf16_normed`: normed in bf16 instead, for an fp32 residual stream whose norm feeds only bf16
// matrix products (under autocast): rounded once here rather than cast by autocast once per product
// (three for q, k, v), with one gradient conversion back instead of one per product.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& gain, double eps, bool fused,
                       bool bf16_normed = false);
AddNormOutput add_rms_norm(const torch::Tensor& residual, const torch::Tensor& branch, double scale,
                           const torch::Tensor& gain, double eps, bool fused,
                           bool bf16_normed = false);

// The composites, kept as the reference the kernels are tested against.
torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& gain, double eps);
AddNormOutput add_rms_norm_reference(const torch::Tensor& residual, const torch::Tensor& branch,
                                     double scale, const torch::Tensor& gain, double eps);

}  // namespace ladder::kernels
