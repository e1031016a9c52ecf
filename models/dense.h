// The dense decoder-only transformer, LLaMA-style (Touvron et al. 2023): token embedding; pre-norm
// blocks of RMSNorm -> grouped-query causal attention with rotary embeddings (and optional QK-norm,
// Wortsman et al. 2023) -> residual, RMSNorm -> SwiGLU MLP -> residual; final RMSNorm; readout tied
// or untied; optional z-loss.
//
// The same class is the mixture-of-experts model (model.arch = "moe"): the layers config.moe routes
// replace the SwiGLU MLP with RoutedExperts (models/moe.h); and the hybrid state-space model
// (model.arch = "hybrid"): the layers config.hybrid.pattern marks M are RMSNorm -> Mamba-2 mixer ->
// residual (models/mamba.h) instead of the attention + MLP block, and the others may attend
// within a sliding window; and ParScale (model.arch = "parscale", Chen et al. 2025): the embedded
// input is replicated into P streams along the batch (stream-major), every attention layer prepends
// each stream's own learned key/value prefix, the backbone is shared, and the P final hidden states
// are combined by learned dynamic weights before the one readout. Everything else is shared.
//
// Tensor parallelism (parallel/tensor_parallel.h): attention is split by heads (query and key/value
// heads alike: tp must divide both), the MLP along its hidden dimension, the embedding and the
// readout along the vocabulary (padded to a multiple of tp). Activations are [tokens, d_model]
// (batch x seq flattened), with sequence parallelism this rank's block of the tokens.
#pragma once

#include <vector>

#include "models/blocks.h"
#include "models/mamba.h"
#include "models/model.h"
#include "models/moe.h"
#include "parallel/tensor_parallel.h"

namespace ladder::models {

class DenseTransformer final : public Model {
 public:
  DenseTransformer(const ModelConfig& config, int64_t vocab_size, int64_t max_seq_len,
                   const parallel::TensorParallel& tp = {}, const StageLayout& stage = {},
                   const parallel::ExpertParallel& ep = {}, bool fused_kernels = false);
  torch::Tensor logits(const torch::Tensor& tokens) override;
  torch::Tensor decode(const torch::Tensor& tokens, DecodeCache& cache) override;
  ModelOutput loss(const torch::Tensor& tokens, const torch::Tensor& targets) override;
  ChunkOutput forward_chunk(size_t chunk, const torch::Tensor& tokens, const torch::Tensor& targets,
                            const torch::Tensor& activation) override;
  std::vector<int64_t> activation_shape(int64_t batch, int64_t seq) const override;
  static StageCosts stage_costs(const ModelConfig& config, int64_t vocab_size, int64_t seq_len,
                                parallel::StageBalance by);
  SizeAccounting accounting(int64_t seq_len) const override;
  ParamStore& params() override { return store_; }
  torch::Tensor take_routing_counts() override;
  void balance_experts(const torch::Tensor& counts) override;
  void set_objective_scale(double scale) override;

  // One block's residual update, exposed for tests: x [batch, seq, d_model] -> x + attn + mlp
  // (unsplit models only; with P streams the batch is P x the input's, stream-major).
  torch::Tensor block(size_t layer, const torch::Tensor& x) const;
  // ParScale's aggregation, exposed for tests: final hidden states [P, tokens, d] -> the weights
  // [tokens, P] and the combined states [tokens, d].
  std::pair<torch::Tensor, torch::Tensor> aggregation(const torch::Tensor& streams) const;

 private:
  struct Block {
    torch::Tensor attn_norm, mlp_norm, q_norm, k_norm;
    parallel::ColumnParallelLinear wq, wk, wv, w_gate, w_up;
    parallel::RowParallelLinear wo, w_down;
    std::unique_ptr<RoutedExperts> moe;  // a routed layer: in place of the SwiGLU MLP
    torch::Tensor prefix_k, prefix_v;    // ParScale: [P, prefix_tokens, kv dim] per stream
    torch::Tensor mamba_norm;            // a Mamba-2 layer: in place of everything above
    std::unique_ptr<Mamba2Mixer> mamba;
  };
  // x [tokens, d_model] of sequences [batch, seq] -> x + attn + mlp. With a cache (decoding), the
  // sequences continue the cached ones, and the layer's keys and values or Mamba-2 state join it.
  torch::Tensor block(size_t layer, const torch::Tensor& x, int64_t batch, int64_t seq,
                      DecodeCache* cache = nullptr) const;
  torch::Tensor final_normed(const torch::Tensor& x) const;
  // ParScale: the P streams' final hidden states [P x tokens, d] -> their weighted sum [tokens, d]
  // with weights softmax(MLP(concatenated streams)) smoothed by epsilon (Chen et al. 2025). Also
  // returns the weights [tokens, P] for tests through `weights` when not null.
  torch::Tensor aggregate(const torch::Tensor& streams, torch::Tensor* weights = nullptr) const;
  // The token embedding, a residual branch's output times its multiplier, and the logits of the
  // final hidden states (times the output multiplier); each reports to the probe when one is set.
  torch::Tensor embed(const torch::Tensor& tokens) const;
  torch::Tensor residual_branch(const torch::Tensor& branch) const;
  torch::Tensor readout(const torch::Tensor& x) const;
  void require_whole(const char* what) const;

  ModelConfig config_;
  bool fused_kernels_;  // build_model's fused_kernels
  int64_t vocab_size_;
  int64_t head_dim_;
  parallel::TensorParallel tp_;
  StageLayout stage_;                     // chunks filled in: every layer when built whole
  int64_t local_heads_, local_kv_heads_;  // this rank's attention heads
  ParamStore store_;
  parallel::VocabParallelEmbedding embedding_;
  std::vector<Block> blocks_;  // one per layer of the model; empty for layers held elsewhere
  torch::Tensor final_norm_;
  int64_t streams_ = 1;  // ParScale's P
  torch::Tensor aggregate_in_, aggregate_in_bias_, aggregate_out_, aggregate_out_bias_;
  parallel::ColumnParallelLinear readout_;  // [vocab, d_model]; the embedding matrix when tied
  RotaryEmbedding rope_;
};

}  // namespace ladder::models
