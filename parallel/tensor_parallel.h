// Tensor-parallel layers (Megatron-LM, Shoeybi et al. 2019): models are written once against these.
// At tp = 1 — the only size built so far — each is the plain layer it names; the sharded forms (and
// their all-reduce / all-gather) arrive with the tensor-parallel issue without touching the models.
//
// Weights are created by the model's ParamStore (models/params.h) and handed in, so these layers
// own no parameters and know nothing of roles.
#pragma once

#include <torch/torch.h>

namespace ladder::parallel {

// y = x W^T with W [out, in]; at tp > 1, W is split by output rows and y stays sharded.
struct ColumnParallelLinear {
  torch::Tensor weight;
  torch::Tensor forward(const torch::Tensor& x) const { return torch::matmul(x, weight.t()); }
};

// y = x W^T with W [out, in]; at tp > 1, W is split by input columns and y is all-reduced.
struct RowParallelLinear {
  torch::Tensor weight;
  torch::Tensor forward(const torch::Tensor& x) const { return torch::matmul(x, weight.t()); }
};

// Token embedding E [vocab, d]; at tp > 1, E is split by vocabulary rows.
struct VocabParallelEmbedding {
  torch::Tensor weight;
  torch::Tensor forward(const torch::Tensor& tokens) const {
    return torch::embedding(weight, tokens);
  }
};

struct CrossEntropyOutput {
  torch::Tensor loss;    // mean cross-entropy over all positions (the quantity reported)
  torch::Tensor z_loss;  // mean squared log-partition (PaLM, Chowdhery et al. 2022, section 5)
};

// Cross-entropy of logits [N, vocab] against targets [N] in at least fp32, with the log-partition
// kept for the z-loss. At tp > 1 the logits are vocabulary-sharded and the max / sum-exp are
// all-reduced.
CrossEntropyOutput vocab_parallel_cross_entropy(const torch::Tensor& logits,
                                                const torch::Tensor& targets);

}  // namespace ladder::parallel
