// The interface every architecture implements, and its size accounting (DESIGN.md contract 8).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "models/config.h"
#include "models/params.h"
#include "parallel/config.h"
#include "parallel/expert_parallel.h"
#include "parallel/tensor_parallel.h"

namespace ladder::models {

struct SizeAccounting {
  int64_t total_params = 0;          // every trainable parameter
  int64_t embedding_params = 0;      // the token embedding (shared with the readout when tied)
  int64_t non_embedding_params = 0;  // N of the scaling laws: total - embedding
  int64_t active_params = 0;         // parameters used per token (= total for dense models)
  int64_t active_non_embedding_params = 0;  // N_active: active_params - embedding
  // Model FLOPs per trained token (forward + backward): 6 x (parameters in matmuls per token, the
  // readout included even when tied) + 12 x n_layers x d_model x seq_len for causal self-attention
  // (Hoffmann et al. 2022, appendix F). The embedding lookup costs no FLOPs.
  double flops_per_token = 0;
  int64_t width = 0, depth = 0;
};

struct ModelOutput {
  torch::Tensor loss;       // mean next-token cross-entropy (what is reported)
  torch::Tensor z_loss;     // mean squared log-partition
  torch::Tensor objective;  // what is differentiated: loss + z_loss_weight * z_loss
};

// The part of the layer stack a pipeline rank builds (parallel/pipeline.h): chunks of consecutive
// layers [begin, end), one per virtual stage it holds, in order; whether its first chunk starts the
// model (the embedding) and its last ends it (final norm, readout and loss). The default: the whole
// model as one chunk.
struct StageLayout {
  std::vector<std::pair<int64_t, int64_t>> chunks;  // empty: every layer
  bool first = true, last = true;
};

// What one chunk's forward produces: the activation for the next chunk or, on the model's last
// chunk, the loss.
struct ChunkOutput {
  torch::Tensor activation;
  ModelOutput loss;
};

// Coordinate statistics for `ladder coordcheck` (the coordinate check of Yang et al. 2021, "Tensor
// Programs V"): the mean absolute value of each layer type's output ("embedding",
// "attention", "mlp", "residual", "logits"), averaged over the layers of that type. A model with a
// probe set reports to it on every forward; without one it costs nothing.
class CoordinateProbe {
 public:
  void record(const std::string& layer_type, const torch::Tensor& output) {
    auto& [sum, count] = sums_[layer_type];
    sum += output.detach().abs().mean().item<double>();
    ++count;
  }
  // Layer type -> the mean over its recorded outputs.
  std::map<std::string, double> means() const {
    std::map<std::string, double> out;
    for (const auto& [type, sum_count] : sums_)
      out[type] = sum_count.first / static_cast<double>(sum_count.second);
    return out;
  }
  void clear() { sums_.clear(); }

 private:
  std::map<std::string, std::pair<double, int64_t>> sums_;
};

// What incremental decoding keeps between calls (ladder sample): per layer of the model, an
// attention layer's keys and values so far ([batch, kv_heads, positions, head_dim], rotated, a
// ParScale prefix first) or a Mamba-2 layer's convolution window (its last K - 1 inputs) and SSM
// state ([batch, heads, P, N]); and how many tokens the cache holds.
struct DecodeCache {
  int64_t length = 0;
  std::vector<torch::Tensor> keys, values;  // attention layers
  std::vector<torch::Tensor> conv, ssm;     // Mamba-2 layers
};

class Model {
 public:
  virtual ~Model() = default;
  // Reports layer outputs to `probe` from now on (nullptr: stop).
  void set_probe(CoordinateProbe* probe) { probe_ = probe; }
  // Logits [batch, seq, vocab] for tokens [batch, seq] (a model built whole).
  virtual torch::Tensor logits(const torch::Tensor& tokens) = 0;
  // Logits [batch, n, vocab] of tokens [batch, n] that continue the sequence `cache` holds (empty:
  // a new sequence), which they join: the same as the last n positions of logits() over the whole
  // sequence, at the cost of the new tokens only (a model built whole, without gradients).
  virtual torch::Tensor decode(const torch::Tensor& tokens, DecodeCache& cache) = 0;
  // Loss of predicting targets [batch, seq] from tokens [batch, seq] (a model built whole).
  virtual ModelOutput loss(const torch::Tensor& tokens, const torch::Tensor& targets) = 0;
  // The forward of this rank's `chunk` on a micro-batch of tokens and targets [batch, seq]: the
  // model's first chunk embeds the tokens, the others continue from `activation`, what the previous
  // chunk returned; the model's last chunk returns the loss.
  virtual ChunkOutput forward_chunk(size_t chunk, const torch::Tensor& tokens,
                                    const torch::Tensor& targets,
                                    const torch::Tensor& activation) = 0;
  // The activation between chunks for `batch` sequences of `seq` tokens (fp32).
  virtual std::vector<int64_t> activation_shape(int64_t batch, int64_t seq) const = 0;
  virtual SizeAccounting accounting(int64_t seq_len) const = 0;
  virtual ParamStore& params() = 0;

  // Mixture-of-experts routing (models/moe.h) of the training forwards since the last call: one
  // row per routed layer of the whole model, [routed layers, experts + kRoutingExtras] fp64 on the
  // CPU, zero for layers this rank does not hold; then the counts restart. Every tp rank counts
  // the same tokens, so a sum over dp and pp ranks gives the step's. Undefined for models without
  // routed layers.
  virtual torch::Tensor take_routing_counts() { return {}; }
  // The auxiliary-loss-free bias rule of each routed layer, from counts summed as above.
  virtual void balance_experts(const torch::Tensor& /*counts*/) {}
  // The factor each micro-batch's objective is multiplied by before its backward pass: auxiliary
  // losses that enter the backward pass inside the model take it too.
  virtual void set_objective_scale(double /*scale*/) {}

 protected:
  CoordinateProbe* probe_ = nullptr;
};

// What a pipeline split balances: the cost of each layer, of the embedding (on the first stage) and
// of the final norm, readout and loss (on the last), in FLOPs per token (StageBalance::Flops) or in
// parameters (StageBalance::Params).
struct StageCosts {
  std::vector<double> layers;
  double first = 0, last = 0;
};
StageCosts stage_costs(const ModelConfig& config, int64_t vocab_size, int64_t seq_len,
                       parallel::StageBalance by);

// The architecture registry: model.arch -> a model whose parameters are registered in its store
// (uninitialised: optim/ initialises them), split over `tp` when it is active, holding the layers
// of `stage`, its experts split over `ep`. With `fused_kernels` (train.fused_kernels) the blocks
// use kernels/' fused CPU kernels (RMSNorm with the residual add, rotary, causal attention,
// SwiGLU, the chunked readout cross-entropy) where they serve the inputs, the LibTorch composites
// elsewhere (CUDA, tp > 1 for the readout).
std::unique_ptr<Model> build_model(const ModelConfig& config, int64_t vocab_size,
                                   int64_t max_seq_len, const parallel::TensorParallel& tp = {},
                                   const StageLayout& stage = {},
                                   const parallel::ExpertParallel& ep = {},
                                   bool fused_kernels = false);

// The size accounting of the model a config describes, without allocating its parameters (a
// model built holding no layer: the store still catalogues every logical tensor). For plans.
SizeAccounting size_accounting(const ModelConfig& config, int64_t vocab_size, int64_t seq_len);

}  // namespace ladder::models
