// Building blocks shared by the architectures: rotary embeddings and causal attention. Pure
// functions of tensors; parameters come from the model's ParamStore. RMSNorm, SwiGLU and the
// readout's cross-entropy are in kernels/ (each a fused CPU kernel with its composite).
#pragma once

#include <torch/torch.h>

namespace ladder::models {

// Rotary position embedding (Su et al. 2021, RoFormer), in the half-split layout of GPT-NeoX/LLaMA:
// the dimension pairs are (i, i + head_dim/2), rotated by angle position * theta^(-2i/head_dim).
class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t head_dim, int64_t max_positions, double theta);
  // x: [batch, seq, heads, head_dim], positions 0..seq-1 (the composite,
  // kernels::rotary_reference).
  int64_t max_positions() const { return cos_.size(0); }
  // `offset`: the first position is that (decoding after a cache of that many tokens).
  torch::Tensor apply(const torch::Tensor& x, int64_t offset = 0) const;
  // q and k together: with `fused`, kernels::rotary_qk on the CPU or kernels::cuda_rotary_qk on a
  // GPU (train.fused_cuda_kernels) where they serve them, else apply() on each.
  std::pair<torch::Tensor, torch::Tensor> apply_qk(const torch::Tensor& q, const torch::Tensor& k,
                                                   bool fused, int64_t offset = 0) const;

 private:
  torch::Tensor cos_, sin_;  // [max_positions, head_dim / 2], fp32 on the CPU
  // The tables in the dtype and on the device of the last input, made once rather than per call.
  mutable torch::Tensor cos_cast_, sin_cast_;
  mutable torch::Tensor cos_gpu_, sin_gpu_;  // fp32 on the GPU of the last CUDA input
};

// Causal scaled-dot-product attention (at::scaled_dot_product_attention: the fused kernel of the
// device). q: [batch, heads, seq, head_dim]; k, v: [batch, kv_heads, seq, head_dim] with heads a
// multiple of kv_heads (grouped-query attention, Ainslie et al. 2023). Returns [batch, heads, seq,
// head_dim].
// `scale` multiplies the scores q.k; 0: 1 / sqrt(head_dim) (Vaswani et al. 2017). `window` > 0:
// each position attends to itself and the window - 1 before it (sliding-window attention, as in
// Longformer and Mistral). `prefix` > 0: k and v begin with that many prefix positions every query
// attends to (prefix tuning, Li and Liang 2021), before the sequence's own.
// `fused`: kernels::causal_attention where it serves (plain causal attention, no window or prefix,
// no grouped-query sharing, short sequences on the CPU), else the device's fused kernel.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double scale = 0, int64_t window = 0,
                               int64_t prefix = 0, bool fused = false);

// The kernel at::scaled_dot_product_attention chooses (at::_fused_sdp_choice) for causal attention
// of q [batch, heads, seq, head_dim] over k, v [batch, kv_heads, seq, head_dim] on their device and
// in their type: "flash attention", "memory-efficient attention", "cuDNN attention", "math
// (unfused)" or "overrideable". Logged at the start of a run, so a slow choice is seen.
std::string sdpa_backend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// Attention of n new queries at positions past .. past + n - 1 of a sequence whose keys and values
// are all given: q [batch, heads, n, head_dim]; k, v [batch, kv_heads, prefix + past + n,
// head_dim]. The same masking as causal_attention (prefix always seen, causal, window), for
// decoding with a cache.
torch::Tensor cached_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double scale, int64_t window,
                               int64_t prefix);

}  // namespace ladder::models
