#include "kernels/cross_entropy.h"

#include <ATen/autocast_mode.h>

#include "core/op_profile.h"
#include "kernels/adamw.h"
#include "kernels/cpu.h"
#include "kernels/cpu/loops.h"
#include "kernels/cuda.h"

namespace ladder::kernels {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

ReadoutLoss readout_cross_entropy_reference(const torch::Tensor& hidden,
                                            const torch::Tensor& weight,
                                            const torch::Tensor& targets, double scale) {
  torch::Tensor logits = torch::matmul(hidden, weight.t());
  if (scale != 1.0) logits = logits * scale;
  const torch::Tensor x = logits.to(at::promote_types(logits.scalar_type(), torch::kFloat32));
  const torch::Tensor lse = x.logsumexp(-1);
  return {lse - x.gather(-1, targets.unsqueeze(-1)).squeeze(-1), lse};
}

namespace {

// The matrix products run in the inputs' type whatever the autocast state of the thread (the
// backward pass may run where autocast is on).
struct NoAutocastCpu {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::DispatchKey::AutocastCPU};
};

int64_t chunk_rows(int64_t tokens, int64_t vocab, int64_t chunk_elements) {
  return std::clamp<int64_t>(chunk_elements / std::max<int64_t>(vocab, 1), 1,
                             std::max<int64_t>(tokens, 1));
}

struct ReadoutCrossEntropyFunction : torch::autograd::Function<ReadoutCrossEntropyFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const torch::Tensor& targets,
                               double scale, int64_t chunk_elements) {
    const NoAutocastCpu no_autocast;
    const torch::Tensor h = hidden.contiguous(), w = weight.contiguous(), y = targets.contiguous();
    const int64_t tokens = h.size(0), vocab = w.size(0);
    const int64_t rows = chunk_rows(tokens, vocab, chunk_elements);
    const auto acc = h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    torch::Tensor loss = torch::empty({tokens}, h.options().dtype(acc));
    torch::Tensor lse = torch::empty({tokens}, h.options().dtype(acc));
    torch::Tensor kept;  // the logits, when one chunk holds them all
    for (int64_t begin = 0; begin < tokens; begin += rows) {
      const int64_t n = std::min(rows, tokens - begin);
      const torch::Tensor logits = at::mm(h.narrow(0, begin, n), w.t());
      AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, h.scalar_type(), "cross_entropy", [&] {
        using A = cpu::acc_t<scalar_t>;
        LADDER_CPU_LOOP(cross_entropy_forward<scalar_t>)
        (logits.data_ptr<scalar_t>(), y.data_ptr<int64_t>() + begin, n, vocab, scale,
         loss.data_ptr<A>() + begin, lse.data_ptr<A>() + begin);
      });
      if (n == tokens) kept = logits;
    }
    ctx->save_for_backward({h, w, y, lse});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["rows"] = rows;
    if (kept.defined()) ctx->saved_data["logits"] = kept;
    return {loss, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    LADDER_OP_CLASS("loss");
    const NoAutocastCpu no_autocast;
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &h = saved[0], &w = saved[1], &y = saved[2], &lse = saved[3];
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t rows = ctx->saved_data["rows"].toInt();
    const int64_t tokens = h.size(0), vocab = w.size(0);
    auto as_acc = [&](const torch::Tensor& g) {
      return g.defined() ? g.to(lse.scalar_type()).contiguous() : torch::Tensor();
    };
    const torch::Tensor g_loss = as_acc(grad[0]), g_lse = as_acc(grad[1]);
    torch::Tensor grad_h = torch::empty_like(h);
    torch::Tensor grad_w;  // summed over chunks in fp32 (fp64) when there are several
    for (int64_t begin = 0; begin < tokens; begin += rows) {
      const int64_t n = std::min(rows, tokens - begin);
      const torch::Tensor h_chunk = h.narrow(0, begin, n);
      torch::Tensor logits;
      if (ctx->saved_data.count("logits")) {
        // Used up here (overwritten by its gradient): a second backward pass recomputes it.
        logits = ctx->saved_data["logits"].toTensor();
        ctx->saved_data.erase("logits");
      } else {
        logits = at::mm(h_chunk, w.t());
      }
      AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, h.scalar_type(), "cross_entropy_backward", [&] {
        using A = cpu::acc_t<scalar_t>;
        LADDER_CPU_LOOP(cross_entropy_backward<scalar_t>)
        (logits.data_ptr<scalar_t>(), y.data_ptr<int64_t>() + begin, lse.data_ptr<A>() + begin,
         g_loss.defined() ? g_loss.data_ptr<A>() + begin : nullptr,
         g_lse.defined() ? g_lse.data_ptr<A>() + begin : nullptr, n, vocab, scale);
      });
      // logits now holds d logits.
      torch::Tensor grad_h_chunk = grad_h.narrow(0, begin, n);
      at::mm_out(grad_h_chunk, logits, w);
      const torch::Tensor chunk_grad_w = at::mm(logits.t(), h_chunk);
      if (n == tokens)
        grad_w = chunk_grad_w;
      else if (!grad_w.defined())
        grad_w = chunk_grad_w.to(lse.scalar_type());
      else
        grad_w.add_(chunk_grad_w);
    }
    return {grad_h, grad_w.to(w.scalar_type()), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool readout_cross_entropy_fusable(const torch::Tensor& hidden, const torch::Tensor& weight,
                                   const torch::Tensor& targets) {
  if (cuda_readout_cross_entropy_serves(hidden, weight, targets)) return true;
  if (!hidden.device().is_cpu() || !weight.device().is_cpu() || !cpu_has_avx2()) return false;
  const auto t = hidden.scalar_type();
  const bool autocast = at::autocast::is_autocast_enabled(c10::DeviceType::CPU) &&
                        at::autocast::get_autocast_dtype(c10::DeviceType::CPU) == at::kBFloat16;
  // Under bf16 autocast the fp32 inputs are cast; other types run as they are.
  const bool typed = (autocast && (t == at::kFloat || t == at::kBFloat16)) ||
                     (!autocast && (t == at::kFloat || t == at::kDouble));
  return typed && weight.scalar_type() == t && hidden.dim() == 2 && weight.dim() == 2 &&
         hidden.size(1) == weight.size(1) && targets.dim() == 1 &&
         targets.size(0) == hidden.size(0) && targets.scalar_type() == at::kLong;
}

ReadoutLoss readout_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                  const torch::Tensor& targets, double scale,
                                  int64_t chunk_elements) {
  LADDER_OP_CLASS("loss");
  if (cuda_readout_cross_entropy_serves(hidden, weight, targets))
    return cuda_readout_cross_entropy(hidden, weight, targets, scale);
  TORCH_CHECK(readout_cross_entropy_fusable(hidden, weight, targets),
              "readout_cross_entropy: inputs the fused kernel does not serve");
  if (targets.numel() > 0) {
    const auto [low, high] = torch::aminmax(targets);
    TORCH_CHECK(low.item<int64_t>() >= 0 && high.item<int64_t>() < weight.size(0),
                "readout_cross_entropy: a target outside the vocabulary");
  }
  torch::Tensor h = hidden, w = weight;
  if (at::autocast::is_autocast_enabled(c10::DeviceType::CPU)) {
    // The casts autocast would make for the readout's matmul, from its per-step weight cache.
    h = at::autocast::cached_cast(at::kBFloat16, hidden, c10::DeviceType::CPU);
    w = at::autocast::cached_cast(at::kBFloat16, bf16_weight(weight), c10::DeviceType::CPU);
  }
  const auto out = ReadoutCrossEntropyFunction::apply(h, w, targets, scale, chunk_elements);
  return {out[0], out[1]};
}

}  // namespace ladder::kernels
