// The rotary position embedding (Su et al. 2021, RoFormer) in the half-split layout of
// GPT-NeoX/LLaMA, applied to q and k in one pass: the pairs (x_i, x_{i + d/2}) of each head rotate
// by angle position x theta^(-2i/d):
//   out_i = x_i cos - x_{i+d/2} sin,   out_{i+d/2} = x_{i+d/2} cos + x_i sin
// The backward pass is the rotation by the opposite angle. The composite makes seven passes per
// tensor (four products, a difference, a sum, the concatenation); the kernel reads each element
// once and computes in fp32 (fp64 for fp64 inputs), rounding once to the input's type.
#pragma once

#include <torch/torch.h>

#include <utility>

namespace ladder::kernels {

// Whether the fused kernel serves q [batch, seq, heads, head_dim] and k [batch, seq, kv_heads,
// head_dim] (on a CPU with AVX2; fp32, bf16 or fp64; the same type for both) with fp32 tables on
// the CPU.
bool rotary_fusable(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& cos);
// q and k rotated, contiguous, in their type. cos, sin: [>= seq, head_dim / 2] fp32.
std::pair<torch::Tensor, torch::Tensor> rotary_qk(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& cos,
                                                  const torch::Tensor& sin);

// The composite for one tensor x [batch, seq, heads, head_dim], tables [>= seq, head_dim / 2] in
// x's type and on its device: the reference.
torch::Tensor rotary_reference(const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin);

}  // namespace ladder::kernels
