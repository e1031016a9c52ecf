// SwiGLU (Shazeer 2020): out = silu(gate) x up, silu(g) = g sigmoid(g). The composite writes
// silu(gate) and then the product, and its backward recomputes the sigmoid in four more passes; the
// kernel makes one pass each way, in fp32 (fp64 for fp64 inputs):
//   d gate = dy up s (1 + g (1 - s)),   d up = dy g s,   s = sigmoid(g)
#pragma once

#include <torch/torch.h>

namespace ladder::kernels {

// The fused kernel where it serves the inputs (fused, CPU with AVX2, gate and up of one shape and
// one type: fp32, bf16 or fp64), else the composite.
torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up, bool fused);

// The composite: the reference.
torch::Tensor swiglu_reference(const torch::Tensor& gate, const torch::Tensor& up);

}  // namespace ladder::kernels
