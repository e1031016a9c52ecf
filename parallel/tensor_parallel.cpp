#include "parallel/tensor_parallel.h"

#include <spdlog/spdlog.h>

#include <ATen/autocast_mode.h>

#include <chrono>
#include <limits>

namespace ladder::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Autograd contexts hold IValues; the group and the statistics travel as their addresses (both
// outlive the graph).
struct Handles {
  const Communicator* group;
  CommStats* stats;
};

std::vector<int64_t> addresses(const TensorParallel& tp) {
  return {reinterpret_cast<int64_t>(tp.group), reinterpret_cast<int64_t>(tp.stats)};
}
Handles handles(const std::vector<int64_t>& a) {
  return {reinterpret_cast<const Communicator*>(a[0]), reinterpret_cast<CommStats*>(a[1])};
}

using Clock = std::chrono::steady_clock;

// Runs a collective, adding its time and its bytes under the ring model of nccl-tests' bus
// bandwidth (as data parallelism counts them: all-reduce of S bytes 2 (n - 1) / n S; all-gather or
// reduce-scatter over S bytes in all (n - 1) / n S).
template <typename Fn>
torch::Tensor counted(const Handles& h, const torch::Tensor& x, bool all_reduce, Fn collective) {
  const auto start = Clock::now();
  torch::Tensor out = collective();
  if (h.stats) {
    const int64_t n = h.group->size();
    const int64_t bytes = std::max(x.numel(), out.numel()) * x.element_size();
    h.stats->seconds += std::chrono::duration<double>(Clock::now() - start).count();
    h.stats->bytes += (all_reduce ? 2 : 1) * (n - 1) * bytes / n;
    ++h.stats->collectives;
  }
  return out;
}

torch::Tensor all_reduced(const torch::Tensor& x, const Handles& h) {
  return counted(h, x, true, [&] {
    torch::Tensor out = x.contiguous().clone();  // never reduce into a tensor autograd still owns
    h.group->all_reduce(out);
    return out;
  });
}
torch::Tensor all_gathered(const torch::Tensor& x, const Handles& h) {
  return counted(h, x, false, [&] { return h.group->all_gather(x.contiguous()); });
}
torch::Tensor reduce_scattered(const torch::Tensor& x, const Handles& h) {
  return counted(h, x, false, [&] { return h.group->reduce_scatter(x.contiguous()); });
}

// f: identity forward, all-reduce of the input gradient backward.
struct CopyToTensorParallel : torch::autograd::Function<CopyToTensorParallel> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               std::vector<int64_t> tp) {
    ctx->saved_data["tp"] = tp;
    return x.view_as(x);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    return {all_reduced(grad[0], handles(ctx->saved_data["tp"].toIntVector())), torch::Tensor()};
  }
};

// g: all-reduce forward, identity backward.
struct ReduceFromTensorParallel : torch::autograd::Function<ReduceFromTensorParallel> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               std::vector<int64_t> tp) {
    return all_reduced(x, handles(tp));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    return {grad[0], torch::Tensor()};
  }
};

struct GatherFromSequenceParallel : torch::autograd::Function<GatherFromSequenceParallel> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               std::vector<int64_t> tp) {
    ctx->saved_data["tp"] = tp;
    return all_gathered(x, handles(tp));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    return {reduce_scattered(grad[0], handles(ctx->saved_data["tp"].toIntVector())),
            torch::Tensor()};
  }
};

struct ReduceScatterToSequenceParallel
    : torch::autograd::Function<ReduceScatterToSequenceParallel> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               std::vector<int64_t> tp) {
    ctx->saved_data["tp"] = tp;
    return reduce_scattered(x, handles(tp));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    return {all_gathered(grad[0], handles(ctx->saved_data["tp"].toIntVector())), torch::Tensor()};
  }
};

// All-gather of the token blocks forward; backward, this rank's block of the (complete) gradient.
struct GatherTokensToReplicate : torch::autograd::Function<GatherTokensToReplicate> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               std::vector<int64_t> tp) {
    const Handles h = handles(tp);
    ctx->saved_data["rank"] = static_cast<int64_t>(h.group->rank());
    ctx->saved_data["rows"] = x.size(0);
    return all_gathered(x, h);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    const int64_t rows = ctx->saved_data["rows"].toInt();
    return {grad[0].narrow(0, ctx->saved_data["rank"].toInt() * rows, rows), torch::Tensor()};
  }
};

// Cross-entropy over a vocabulary split by columns. Outputs per position: the loss lse - z_target
// and the log-partition lse. The gradient with respect to the local logits is
// softmax x (g_loss + g_lse) - onehot(target) x g_loss, which needs no communication: the softmax
// was normalised by the global sum in the forward pass.
struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static tensor_list forward(AutogradContext* ctx, const torch::Tensor& logits,
                             const torch::Tensor& targets, std::vector<int64_t> tp,
                             int64_t first_column, int64_t vocab_size) {
    const Handles h = handles(tp);
    const Communicator* group = h.group;
    // Three reductions of one number per position (max, sum of exponentials, target logit).
    auto reduce = [&](torch::Tensor& t, ReduceOp op) {
      t = counted(h, t, true, [&] {
        torch::Tensor out = t.contiguous();
        group->all_reduce(out, op);
        return out;
      });
    };
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
    if (group) reduce(max, ReduceOp::Max);
    torch::Tensor exp = (x - max.unsqueeze(-1)).exp_();
    torch::Tensor sum = exp.sum(-1);
    if (group) reduce(sum, ReduceOp::Sum);
    const torch::Tensor lse = sum.log() + max;
    // The target's logit lives on one rank; the others contribute zero.
    const torch::Tensor local = targets - first_column;
    const torch::Tensor here = (local >= 0).logical_and(local < columns);
    const torch::Tensor index = local.clamp(0, columns - 1).unsqueeze(-1);
    torch::Tensor target_logit = x.gather(-1, index).squeeze(-1).mul(here);
    if (group) reduce(target_logit, ReduceOp::Sum);
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

torch::Tensor copy_to_tensor_parallel(const torch::Tensor& x, const TensorParallel& tp) {
  return CopyToTensorParallel::apply(x, addresses(tp));
}

torch::Tensor reduce_from_tensor_parallel(const torch::Tensor& x, const TensorParallel& tp) {
  return ReduceFromTensorParallel::apply(x, addresses(tp));
}

torch::Tensor gather_from_sequence_parallel(const torch::Tensor& x, const TensorParallel& tp) {
  return GatherFromSequenceParallel::apply(x, addresses(tp));
}

torch::Tensor reduce_scatter_to_sequence_parallel(const torch::Tensor& x,
                                                  const TensorParallel& tp) {
  return ReduceScatterToSequenceParallel::apply(x, addresses(tp));
}

torch::Tensor enter_column_region(const torch::Tensor& x, const TensorParallel& tp) {
  if (!tp.active()) return x;
  if (!tp.sequence_parallel) return copy_to_tensor_parallel(x, tp);
  // Under autocast the region's matmuls read bf16 anyway: gather the tokens in it (half the bytes).
  const c10::DeviceType device = x.device().type();
  const bool cast = at::autocast::is_autocast_enabled(device) && x.scalar_type() == at::kFloat;
  return gather_from_sequence_parallel(cast ? x.to(at::autocast::get_autocast_dtype(device)) : x,
                                       tp);
}

torch::Tensor gather_tokens_to_replicate(const torch::Tensor& x, const TensorParallel& tp) {
  if (!tp.active() || !tp.sequence_parallel) return x;
  return GatherTokensToReplicate::apply(x, addresses(tp));
}

torch::Tensor exit_row_region(const torch::Tensor& partial, const TensorParallel& tp) {
  if (!tp.active()) return partial;
  return tp.sequence_parallel ? reduce_scatter_to_sequence_parallel(partial, tp)
                              : reduce_from_tensor_parallel(partial, tp);
}

torch::Tensor RowParallelLinear::forward(const torch::Tensor& x) const {
  return exit_row_region(torch::matmul(x, kernels::bf16_weight(weight).t()), tp);
}

torch::Tensor VocabParallelEmbedding::forward(const torch::Tensor& tokens) const {
  if (!tp.active()) return torch::embedding(weight, tokens);
  const int64_t rows = weight.size(0), first = tp.rank() * rows;
  const torch::Tensor local = tokens - first;
  const torch::Tensor here = (local >= 0).logical_and(local < rows);
  const torch::Tensor looked_up =
      torch::embedding(weight, local.clamp(0, rows - 1)) * here.unsqueeze(-1).to(weight.dtype());
  return tp.sequence_parallel ? reduce_scatter_to_sequence_parallel(looked_up, tp)
                              : reduce_from_tensor_parallel(looked_up, tp);
}

CrossEntropyOutput vocab_parallel_cross_entropy(const torch::Tensor& logits,
                                                const torch::Tensor& targets,
                                                const TensorParallel& tp, int64_t vocab_size) {
  const TensorParallel active = tp.active() ? tp : TensorParallel{};
  const int64_t first_column = tp.rank() * logits.size(-1);
  const auto out = VocabParallelCrossEntropy::apply(logits, targets, addresses(active),
                                                    first_column, vocab_size);
  return {out[0].mean(), out[1].square().mean()};
}

std::string describe_tensor_parallel(const TensorParallel& tp, int64_t n_heads, int64_t n_kv_heads,
                                     int64_t vocab) {
  return fmt::format(
      "tensor parallel: tp={}{}: attention heads {}/{} per rank, vocabulary padded to {}",
      tp.size(), tp.sequence_parallel ? ", sequence parallel" : "", n_heads / tp.size(),
      n_kv_heads / tp.size(), (vocab + tp.size() - 1) / tp.size() * tp.size());
}

}  // namespace ladder::parallel
