// The readout and its softmax cross-entropy in chunks of tokens, so that the [tokens, vocab]
// logits in fp32 never exist at once (Liger-Kernel's fused linear cross-entropy does the same on
// GPUs, Hsu et al. 2024). Per token t with hidden state h_t and target y_t:
//   z = scale x (h_t W^T),   lse_t = log sum_j exp z_j,   loss_t = lse_t - z_{y_t}
// and the z-loss (PaLM, Chowdhery et al. 2022) is the caller's mean of lse_t^2. The products run in
// the inputs' type (bf16 under autocast, as the composite's readout would: the inputs are cast by
// autocast's own cache), the softmax in fp32 (fp64 for fp64). Backward, per chunk:
//   d z_j = softmax_j (d loss_t + d lse_t) - [j = y_t] d loss_t,   d logits = scale x d z
//   d h = d logits W,   d W = sum over chunks of d logits^T h
// When the logits fit in one chunk they are kept for the backward pass; otherwise each chunk's
// logits are recomputed there (one more readout product, 2 V d FLOPs per token) instead of stored.
#pragma once

#include <torch/torch.h>

namespace ladder::kernels {

struct ReadoutLoss {
  torch::Tensor loss;  // [tokens] lse - target logit, fp32 (fp64 for fp64 inputs)
  torch::Tensor lse;   // [tokens] the log-partition
};

// Whether the fused kernel serves hidden [tokens, d] and weight [vocab, d] (on a CPU with AVX2, one
// type: fp32 or fp64, or bf16 after autocast's cast) and int64 targets [tokens].
bool readout_cross_entropy_fusable(const torch::Tensor& hidden, const torch::Tensor& weight,
                                   const torch::Tensor& targets);
// The fused readout + loss; chunk_elements bounds the logits one chunk holds (rows x vocab).
ReadoutLoss readout_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                  const torch::Tensor& targets, double scale,
                                  int64_t chunk_elements = int64_t{1} << 23);

// The composite: logits = scale x hidden W^T (under autocast like any matmul), then the loss in
// at least fp32. The reference.
ReadoutLoss readout_cross_entropy_reference(const torch::Tensor& hidden,
                                            const torch::Tensor& weight,
                                            const torch::Tensor& targets, double scale);

}  // namespace ladder::kernels
