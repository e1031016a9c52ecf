// The interface every architecture implements, and its size accounting (DESIGN.md contract 8).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "models/config.h"
#include "models/params.h"
#include "parallel/tensor_parallel.h"

namespace ladder::models {

struct SizeAccounting {
  int64_t total_params = 0;          // every trainable parameter
  int64_t embedding_params = 0;      // the token embedding (shared with the readout when tied)
  int64_t non_embedding_params = 0;  // N of the scaling laws: total - embedding
  int64_t active_params = 0;         // parameters used per token (= total for dense models)
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

class Model {
 public:
  virtual ~Model() = default;
  // Logits [batch, seq, vocab] for tokens [batch, seq].
  virtual torch::Tensor logits(const torch::Tensor& tokens) = 0;
  // Loss of predicting targets [batch, seq] from tokens [batch, seq].
  virtual ModelOutput loss(const torch::Tensor& tokens, const torch::Tensor& targets) = 0;
  virtual SizeAccounting accounting(int64_t seq_len) const = 0;
  virtual ParamStore& params() = 0;
};

// The architecture registry: model.arch -> a model whose parameters are registered in `store`
// (uninitialised: optim/ initialises them), split over `tp` when it is active. Throws ladder::Error
// for an architecture not built.
std::unique_ptr<Model> build_model(const ModelConfig& config, int64_t vocab_size,
                                   int64_t max_seq_len, const parallel::TensorParallel& tp = {});

}  // namespace ladder::models
