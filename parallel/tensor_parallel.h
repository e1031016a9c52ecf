// Tensor-parallel layers (Megatron-LM, Shoeybi et al. 2019) and sequence parallelism (Korthikanti
// et al. 2022): models are written once against these. Without a group (or with a group of one)
// each is the plain layer it names and communicates nothing.
//
// A column-parallel linear splits W [out, in] by output rows: each rank computes its slice of the
// output from the whole input. A row-parallel linear splits W by input columns: each rank computes
// a partial output from its slice of the input, and the partials are summed. A column-parallel
// layer followed by a row-parallel one (attention's q/k/v then o; the MLP's gate/up then down)
// needs one all-reduce in the forward pass and one in the backward pass, through the conjugate
// operators f (identity forward, all-reduce backward) and g (all-reduce forward, identity
// backward).
//
// With sequence parallelism the activations between those regions (residual stream, norms) are
// sharded by token: a tensor whose dim 0 indexes tokens ([tokens, d_model], tokens = batch x seq
// flattened) holds rank r's r-th block of rows. The region then starts with an all-gather of the
// tokens (backward: reduce-scatter) and ends with a reduce-scatter of the partial sums (backward:
// all-gather): the same bytes as the all-reduce it replaces, and activation memory outside the
// regions divided by tp.
//
// Weights are created by the model's ParamStore (models/params.h) and handed in, so these layers
// own no parameters and know nothing of roles.
#pragma once

#include <torch/torch.h>

#include "kernels/adamw.h"
#include "parallel/communicator.h"

namespace ladder::parallel {

// The group a layer is split over.
struct TensorParallel {
  const Communicator* group = nullptr;  // nullptr: not split
  bool sequence_parallel = false;       // activations outside the regions are sharded by token
  CommStats* stats = nullptr;           // where the layers' communication is counted, if anywhere
  int size() const { return group ? group->size() : 1; }
  int rank() const { return group ? group->rank() : 0; }
  bool active() const { return size() > 1; }
};

// The conjugate operators, as autograd functions, over tp.group (which must be set). Tensors are
// split or gathered along dim 0. Time and bytes go to tp.stats when it is set.
torch::Tensor copy_to_tensor_parallel(const torch::Tensor& x, const TensorParallel& tp);      // f
torch::Tensor reduce_from_tensor_parallel(const torch::Tensor& x, const TensorParallel& tp);  // g
// Sequence parallelism: all-gather of the token blocks (backward: reduce-scatter), and
// reduce-scatter of partial sums into token blocks (backward: all-gather).
torch::Tensor gather_from_sequence_parallel(const torch::Tensor& x, const TensorParallel& tp);
torch::Tensor reduce_scatter_to_sequence_parallel(const torch::Tensor& x, const TensorParallel& tp);

// The all-gather of the token blocks for a computation every rank repeats whole (the router of a
// mixture-of-experts layer): the backward keeps this rank's block of the gradient, which is already
// complete on every rank (no reduction: summing would count it tp times). x itself without
// sequence parallelism.
torch::Tensor gather_tokens_to_replicate(const torch::Tensor& x, const TensorParallel& tp);

// The output of a row-parallel region (partial sums on each rank): summed over the group (g), or
// reduce-scattered into token blocks with sequence parallelism; x itself when not split.
torch::Tensor exit_row_region(const torch::Tensor& x, const TensorParallel& tp);

// A replicated parameter (a norm gain) read where each rank acts on part of the data — inside the
// head-split attention, or on a block of tokens under sequence parallelism — enters through f, so
// that its gradient is summed over the group and stays the same on every rank. x itself when not
// split.
inline torch::Tensor replicated_in_partial_use(const torch::Tensor& w, const TensorParallel& tp) {
  return tp.active() ? copy_to_tensor_parallel(w, tp) : w;
}

// The input of a column-parallel region, entered once for every layer that reads it (q, k and v;
// gate and up): f, or the all-gather of the tokens with sequence parallelism; x itself when not
// split.
torch::Tensor enter_column_region(const torch::Tensor& x, const TensorParallel& tp);

// y = x W^T with W [out, in]. At tp > 1, `weight` is this rank's block of out / tp rows and y holds
// the matching block of output features. With sequence parallelism x is this rank's block of tokens
// and y covers all tokens. forward() enters the region itself; local() takes an input already
// entered (enter_column_region), for layers that share it.
struct ColumnParallelLinear {
  torch::Tensor weight;
  TensorParallel tp;
  torch::Tensor forward(const torch::Tensor& x) const { return local(enter_column_region(x, tp)); }
  torch::Tensor local(const torch::Tensor& entered) const {
    return torch::matmul(entered, kernels::bf16_weight(weight).t());
  }
};

// y = x W^T with W [out, in]. At tp > 1, `weight` is this rank's block of in / tp columns, x the
// matching block of input features, and y is summed over the group (with sequence parallelism,
// reduce-scattered into this rank's block of tokens).
struct RowParallelLinear {
  torch::Tensor weight;
  TensorParallel tp;
  torch::Tensor forward(const torch::Tensor& x) const;
};

// Token embedding E [vocab, d]. At tp > 1, `weight` is this rank's block of vocab / tp rows (the
// vocabulary padded to a multiple of tp); each rank looks up the tokens it holds, zeros the others,
// and the results are summed (with sequence parallelism, reduce-scattered by token).
struct VocabParallelEmbedding {
  torch::Tensor weight;
  TensorParallel tp;
  torch::Tensor forward(const torch::Tensor& tokens) const;
};

struct CrossEntropyOutput {
  torch::Tensor loss;    // mean cross-entropy over all positions (the quantity reported)
  torch::Tensor z_loss;  // mean squared log-partition (PaLM, Chowdhery et al. 2022, section 5)
};

// Cross-entropy of logits [N, columns] against targets [N], in fp32, with the log-partition kept
// for the z-loss. At tp > 1 the logits are this rank's block of the (padded) vocabulary, columns
// [rank x columns, (rank + 1) x columns); the max, the sum of exponentials and the target's logit
// are all-reduced, so the full logits are never gathered on one rank. Columns at or beyond
// `vocab_size` (the padding) are masked out; vocab_size <= 0 means no padding.
CrossEntropyOutput vocab_parallel_cross_entropy(const torch::Tensor& logits,
                                                const torch::Tensor& targets,
                                                const TensorParallel& tp = {},
                                                int64_t vocab_size = 0);

// The start-up log line of tensor parallelism: tp, sequence parallelism, heads per rank and the
// padded vocabulary.
std::string describe_tensor_parallel(const TensorParallel& tp, int64_t n_heads, int64_t n_kv_heads,
                                     int64_t vocab);

}  // namespace ladder::parallel
