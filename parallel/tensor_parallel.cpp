#include "parallel/tensor_parallel.h"

#include <limits>

namespace ladder::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Autograd contexts hold IValues; the group travels as its address (it outlives the graph).
int64_t address_of(const Communicator& tp) {
  return reinterpret_cast<int64_t>(&tp);
}
const Communicator& group_at(AutogradContext* ctx) {
  return *reinterpret_cast<const Communicator*>(ctx->saved_data["tp"].toInt());
}

torch::Tensor all_reduced(const torch::Tensor& x, const Communicator& tp) {
  torch::Tensor out = x.contiguous().clone();  // never reduce into a tensor autograd still owns
  tp.all_reduce(out);
  return out;
}

// f: identity forward, all-reduce of the input gradient backward.
struct CopyToTensorParallel : torch::autograd::Function<CopyToTensorParallel> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t tp) {
    ctx->saved_data["tp"] = tp;
    return x.view_as(x);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    return {all_reduced(grad[0], group_at(ctx)), torch::Tensor()};
  }
};

// g: all-reduce forward, identity backward.
struct ReduceFromTensorParallel : torch::autograd::Function<ReduceFromTensorParallel> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t tp) {
    return all_reduced(x, *reinterpret_cast<const Communicator*>(tp));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    return {grad[0], torch::Tensor()};
  }
};

struct GatherFromSequenceParallel : torch::autograd::Function<GatherFromSequenceParallel> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t tp) {
    ctx->saved_data["tp"] = tp;
    return reinterpret_cast<const Communicator*>(tp)->all_gather(x.contiguous());
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    return {group_at(ctx).reduce_scatter(grad[0].contiguous()), torch::Tensor()};
  }
};

struct ReduceScatterToSequenceParallel
    : torch::autograd::Function<ReduceScatterToSequenceParallel> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t tp) {
    ctx->saved_data["tp"] = tp;
    return reinterpret_cast<const Communicator*>(tp)->reduce_scatter(x.contiguous());
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    return {group_at(ctx).all_gather(grad[0].contiguous()), torch::Tensor()};
  }
};

// Cross-entropy over a vocabulary split by columns. Outputs per position: the loss lse - z_target
// and the log-partition lse. The gradient with respect to the local logits is
// softmax x (g_loss + g_lse) - onehot(target) x g_loss, which needs no communication: the softmax
// was normalised by the global sum in the forward pass.
struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static tensor_list forward(AutogradContext* ctx, const torch::Tensor& logits,
                             const torch::Tensor& targets, int64_t tp, int64_t first_column,
                             int64_t vocab_size) {
    const Communicator* group = reinterpret_cast<const Communicator*>(tp);
    const int64_t columns = logits.size(-1);
    // At least fp32 (bf16 logits are upcast; fp64 stays fp64).
    torch::Tensor x = logits.to(at::promote_types(logits.scalar_type(), torch::kFloat32));
    if (vocab_size > 0 && first_column + columns > vocab_size) {
      // The padding columns take no probability.
      x = x.clone();
      x.narrow(-1, std::max<int64_t>(0, vocab_size - first_column),
               first_column + columns - std::max(vocab_size, first_column))
          .fill_(-std::numeric_limits<float>::infinity());
    }
    torch::Tensor max = std::get<0>(x.max(-1));
    if (group) group->all_reduce(max, ReduceOp::Max);
    torch::Tensor exp = (x - max.unsqueeze(-1)).exp_();
    torch::Tensor sum = exp.sum(-1);
    if (group) group->all_reduce(sum);
    const torch::Tensor lse = sum.log() + max;
    // The target's logit lives on one rank; the others contribute zero.
    const torch::Tensor local = targets - first_column;
    const torch::Tensor here = (local >= 0).logical_and(local < columns);
    const torch::Tensor index = local.clamp(0, columns - 1).unsqueeze(-1);
    torch::Tensor target_logit = x.gather(-1, index).squeeze(-1).mul(here);
    if (group) group->all_reduce(target_logit);
    exp.div_(sum.unsqueeze(-1));  // the softmax over the whole vocabulary, this rank's columns
    ctx->save_for_backward({exp, index, here});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    return {lse - target_logit, lse};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& softmax = saved[0];
    const torch::Tensor &index = saved[1], &here = saved[2];
    const torch::Tensor g_loss =
        grad[0].defined() ? grad[0] : torch::zeros(here.sizes(), softmax.options());
    const torch::Tensor g_lse = grad[1].defined() ? grad[1] : torch::zeros_like(g_loss);
    torch::Tensor d = softmax * (g_loss + g_lse).unsqueeze(-1);
    d.scatter_add_(-1, index, (-g_loss * here).unsqueeze(-1));
    const auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {d.to(dtype), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor copy_to_tensor_parallel(const torch::Tensor& x, const Communicator& tp) {
  return CopyToTensorParallel::apply(x, address_of(tp));
}

torch::Tensor reduce_from_tensor_parallel(const torch::Tensor& x, const Communicator& tp) {
  return ReduceFromTensorParallel::apply(x, address_of(tp));
}

torch::Tensor gather_from_sequence_parallel(const torch::Tensor& x, const Communicator& tp) {
  return GatherFromSequenceParallel::apply(x, address_of(tp));
}

torch::Tensor reduce_scatter_to_sequence_parallel(const torch::Tensor& x, const Communicator& tp) {
  return ReduceScatterToSequenceParallel::apply(x, address_of(tp));
}

torch::Tensor enter_column_region(const torch::Tensor& x, const TensorParallel& tp) {
  if (!tp.active()) return x;
  return tp.sequence_parallel ? gather_from_sequence_parallel(x, *tp.group)
                              : copy_to_tensor_parallel(x, *tp.group);
}

torch::Tensor RowParallelLinear::forward(const torch::Tensor& x) const {
  const torch::Tensor partial = torch::matmul(x, weight.t());
  if (!tp.active()) return partial;
  return tp.sequence_parallel ? reduce_scatter_to_sequence_parallel(partial, *tp.group)
                              : reduce_from_tensor_parallel(partial, *tp.group);
}

torch::Tensor VocabParallelEmbedding::forward(const torch::Tensor& tokens) const {
  if (!tp.active()) return torch::embedding(weight, tokens);
  const int64_t rows = weight.size(0), first = tp.rank() * rows;
  const torch::Tensor local = tokens - first;
  const torch::Tensor here = (local >= 0).logical_and(local < rows);
  const torch::Tensor looked_up =
      torch::embedding(weight, local.clamp(0, rows - 1)) * here.unsqueeze(-1).to(weight.dtype());
  return tp.sequence_parallel ? reduce_scatter_to_sequence_parallel(looked_up, *tp.group)
                              : reduce_from_tensor_parallel(looked_up, *tp.group);
}

CrossEntropyOutput vocab_parallel_cross_entropy(const torch::Tensor& logits,
                                                const torch::Tensor& targets,
                                                const TensorParallel& tp, int64_t vocab_size) {
  const int64_t group = tp.active() ? address_of(*tp.group) : 0;
  const int64_t first_column = tp.rank() * logits.size(-1);
  const auto out =
      VocabParallelCrossEntropy::apply(logits, targets, group, first_column, vocab_size);
  return {out[0].mean(), out[1].square().mean()};
}

}  // namespace ladder::parallel
