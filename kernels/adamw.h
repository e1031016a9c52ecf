// AdamW (Loshchilov and Hutter 2019, Algorithm 2) on one flat fp32 piece of a parameter, in one
// pass that reads the parameter, its gradient and both moments once and writes them once:
//   m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
//   p = p (1 - lr wd) - lr / (1 - b1^t) x m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The multi-tensor composite (optim/adamw.cpp's _foreach_ path, kept for CUDA and as the
// reference) makes nine passes over the same memory.
#pragma once

#include <torch/torch.h>

namespace ladder::kernels {

struct AdamWHyper {
  double lr = 0, weight_decay = 0, beta1 = 0, beta2 = 0, eps = 0;
  int64_t step = 1;  // t, from 1
};

// Whether the kernel serves these flat tensors: fp32, contiguous, on a CPU with AVX2, one size.
bool adamw_fusable(const torch::Tensor& param, const torch::Tensor& grad,
                   const torch::Tensor& exp_avg, const torch::Tensor& exp_avg_sq);
// Updates param, exp_avg and exp_avg_sq in place; with `bf16_copy` (bf16, contiguous, as many
// elements) also writes the updated parameter into it rounded to bf16, in the same pass.
void adamw_update(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                  torch::Tensor& exp_avg_sq, const AdamWHyper& h,
                  const torch::Tensor& bf16_copy = {});

// The bf16 copies adamw_update writes, for the next forward's bf16 products: with them a bf16 step
// reads each fp32 weight once (in AdamW) instead of again for autocast's cast. remember_bf16_copy
// records `copy` as `weight`'s at the weight's current version (LibTorch counts in-place changes):
// once anything else changes the weight (a checkpoint load, ZeRO-1's all-gather, DiLoCo's outer
// step, the composite AdamW) the copy no longer serves and the products cast as before.
void remember_bf16_copy(const torch::Tensor& weight, const torch::Tensor& copy);
// Under bf16 autocast on the CPU, `weight`'s current bf16 copy as a differentiable stand-in (its
// gradient reaches the fp32 weight converted to fp32, as through autocast's cast); else `weight`.
torch::Tensor bf16_weight(const torch::Tensor& weight);
// The same update as LibTorch tensor operations: the reference.
void adamw_update_reference(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                            torch::Tensor& exp_avg_sq, const AdamWHyper& h);

}  // namespace ladder::kernels
