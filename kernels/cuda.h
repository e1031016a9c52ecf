// The fused CUDA kernels (kernels/cuda/kernels.cu) as autograd functions, behind
// train.fused_cuda_kernels: add + RMSNorm (an fp32 residual in, the fp32 sum and an fp32 or bf16
// normed out, one backward pass), rotary q and k, SwiGLU, and the softmax cross-entropy on the
// readout's logits in their own type (bf16 under autocast: no fp32 copy of the logits; the backward
// writes the gradient over the logits in place). kernels::rms_norm, add_rms_norm, swiglu and
// readout_cross_entropy (and models::RotaryEmbedding::apply_qk) call them for CUDA tensors when the
// switch is on; the composites stay their reference (tests/kernels/test_cuda_kernels.cpp, on a
// GPU). Off by default until a GPU run has tested them.
#pragma once

#include <optional>

#include <torch/torch.h>

#include "kernels/cross_entropy.h"
#include "kernels/rms_norm.h"

namespace ladder::kernels {

// Whether this build compiled the CUDA kernels (nvcc found when it was configured).
bool cuda_kernels_built();
// The process's switch (a run sets it from train.fused_cuda_kernels); off at start.
void set_cuda_kernels(bool on);
bool cuda_kernels_on();

// Each returns nullopt (an undefined tensor) when its kernel does not serve the inputs: the switch
// off, not CUDA, or types and shapes the kernel does not take (see each one). `branch` may be
// undefined (plain RMSNorm; `sum` then undefined too).
// add + RMSNorm: residual fp32, branch fp32 or bf16 of its shape, gain fp32 [n].
std::optional<AddNormOutput> cuda_add_rms_norm(const torch::Tensor& residual,
                                               const torch::Tensor& branch, double scale,
                                               const torch::Tensor& gain, double eps,
                                               bool bf16_normed);
// SwiGLU: gate and up of one shape and type, fp32 or bf16.
torch::Tensor cuda_swiglu(const torch::Tensor& gate, const torch::Tensor& up);
// Rotary q [batch, seq, heads, head_dim] and k [batch, seq, kv_heads, head_dim] of one type (fp32
// or bf16) with fp32 tables cos, sin [>= seq, head_dim / 2] on their device; nullopt where not
// served.
std::optional<std::pair<torch::Tensor, torch::Tensor>> cuda_rotary_qk(const torch::Tensor& q,
                                                                      const torch::Tensor& k,
                                                                      const torch::Tensor& cos,
                                                                      const torch::Tensor& sin);
// The readout's product (under autocast like any matmul) and the cross-entropy on its logits:
// hidden [tokens, d], weight [vocab, d], int64 targets [tokens]. A target outside the vocabulary
// gives a NaN loss (no host check: the step's finite check stops the run).
bool cuda_readout_cross_entropy_serves(const torch::Tensor& hidden, const torch::Tensor& weight,
                                       const torch::Tensor& targets);
ReadoutLoss cuda_readout_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                       const torch::Tensor& targets, double scale);

}  // namespace ladder::kernels
