// Causal self-attention for short sequences on the CPU: batched matrix products around a fused
// causal softmax (Vaswani et al. 2017), for q, k, v [batch, heads, seq, head_dim]:
//   S = q k^T,   P = softmax(scale x S) over the keys up to the query's position,   out = P v
// and backward, with P kept:
//   dV = P^T dO,   dP = dO V^T,   dS = scale x P (dP - rowsum(P dP)),   dQ = dS K,   dK = dS^T Q
// The products run in the inputs' type (bf16 under autocast), the softmax in fp32 in one pass (two
// for bf16), P is stored in the inputs' type. LibTorch's CPU flash attention computes the same with
// blocked loops that, at a few hundred positions, run far below the matmul peak
// (docs/performance.md); here the products are LibTorch's batched matmuls. The cost is P: batch x
// heads x seq^2 elements kept for the backward pass, which is why attention_fusable() takes
// sequences up to 512 only.
#pragma once

#include <torch/torch.h>

namespace ladder::kernels {

// Whether the kernel serves q, k, v: on a CPU with AVX2; fp32, bf16 (or fp64), one type for the
// three; the same number of heads for q and for k, v (no grouped-query sharing); seq <= 512.
bool causal_attention_fusable(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v);
// out [batch, heads, seq, head_dim]; `scale` multiplies the scores.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double scale);

}  // namespace ladder::kernels
