#include "kernels/cuda.h"

#include <atomic>

#include "core/op_profile.h"

#ifndef LADDER_CUDA_KERNELS  // kernels/CMakeLists.txt defines it where nvcc built kernels/cuda/
#define LADDER_CUDA_KERNELS 0
#endif
#if LADDER_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/launchers.h"
#endif

namespace ladder::kernels {

namespace {
std::atomic<bool> cuda_switch{false};
}  // namespace

bool cuda_kernels_built() {
  return LADDER_CUDA_KERNELS != 0;
}

void set_cuda_kernels(bool on) {
  TORCH_CHECK(!on || cuda_kernels_built(),
              "set_cuda_kernels: this build has no CUDA kernels (no nvcc when it was configured)");
  cuda_switch = on;
}

bool cuda_kernels_on() {
  return cuda_switch;
}

#if LADDER_CUDA_KERNELS

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool fp32_or_bf16(const torch::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
}

bool is_bf16(const torch::Tensor& t) {
  return t.scalar_type() == at::kBFloat16;
}

void* stream() {
  return c10::cuda::getCurrentCUDAStream().stream();
}

// A gradient in one of the kernels' types (fp32 or bf16), contiguous; zeros where none came.
torch::Tensor gradient_like(const torch::Tensor& grad, const torch::Tensor& like) {
  if (!grad.defined()) return torch::zeros_like(like);
  return (fp32_or_bf16(grad) ? grad : grad.to(at::kFloat)).contiguous();
}

// Inputs: residual, branch (or undefined), gain; outputs {sum, normed} with a branch, {normed}
// without.
struct CudaAddRmsNormFunction : torch::autograd::Function<CudaAddRmsNormFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& residual,
                               const torch::Tensor& branch, const torch::Tensor& gain, double scale,
                               double eps, bool bf16_normed) {
    const c10::cuda::CUDAGuard device_guard(residual.device());
    const torch::Tensor r = residual.contiguous(), g = gain.contiguous();
    const bool has_branch = branch.defined();
    const torch::Tensor b = has_branch ? branch.contiguous() : torch::Tensor();
    const int64_t n = r.size(-1), rows = r.numel() / n;
    torch::Tensor sum = has_branch ? torch::empty_like(r) : torch::Tensor();
    torch::Tensor normed =
        torch::empty(r.sizes(), r.options().dtype(bf16_normed ? at::kBFloat16 : at::kFloat));
    torch::Tensor inv_rms = torch::empty({rows}, r.options());
    cuda::add_rms_norm_forward(r.data_ptr<float>(), has_branch ? b.data_ptr() : nullptr,
                               has_branch && is_bf16(b), static_cast<float>(scale),
                               g.data_ptr<float>(), static_cast<float>(eps), rows, n,
                               has_branch ? sum.data_ptr<float>() : nullptr, normed.data_ptr(),
                               bf16_normed, inv_rms.data_ptr<float>(), stream());
    ctx->save_for_backward({has_branch ? sum : r, inv_rms, g});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["has_branch"] = has_branch;
    ctx->saved_data["branch_bf16"] = has_branch && is_bf16(b);
    if (has_branch) return {sum, normed};
    return {normed};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    LADDER_OP_CLASS("norm");
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &s = saved[0], &inv_rms = saved[1], &g = saved[2];
    const c10::cuda::CUDAGuard device_guard(s.device());
    const bool has_branch = ctx->saved_data["has_branch"].toBool();
    const bool branch_bf16 = ctx->saved_data["branch_bf16"].toBool();
    const double scale = ctx->saved_data["scale"].toDouble();
    const torch::Tensor dy = gradient_like(has_branch ? grads[1] : grads[0], s);
    torch::Tensor d_sum;
    if (has_branch && grads[0].defined()) d_sum = grads[0].to(at::kFloat).contiguous();
    const int64_t n = s.size(-1), rows = s.numel() / n;
    torch::Tensor d_residual = torch::empty_like(s);
    torch::Tensor d_branch =
        has_branch
            ? torch::empty(s.sizes(), s.options().dtype(branch_bf16 ? at::kBFloat16 : at::kFloat))
            : torch::Tensor();
    const int64_t blocks = cuda::rms_norm_gain_row_blocks(rows);
    torch::Tensor partial = torch::empty({blocks, n}, s.options());
    cuda::add_rms_norm_backward(dy.data_ptr(), is_bf16(dy),
                                d_sum.defined() ? d_sum.data_ptr<float>() : nullptr,
                                s.data_ptr<float>(), inv_rms.data_ptr<float>(), g.data_ptr<float>(),
                                static_cast<float>(scale), rows, n, d_residual.data_ptr<float>(),
                                has_branch ? d_branch.data_ptr() : nullptr, branch_bf16,
                                partial.data_ptr<float>(), blocks, stream());
    return {d_residual, d_branch, partial.sum(0), {}, {}, {}};
  }
};

struct CudaSwigluFunction : torch::autograd::Function<CudaSwigluFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gate,
                               const torch::Tensor& up) {
    const c10::cuda::CUDAGuard device_guard(gate.device());
    const torch::Tensor g = gate.contiguous(), u = up.contiguous();
    torch::Tensor out = torch::empty_like(g);
    cuda::swiglu_forward(g.data_ptr(), u.data_ptr(), is_bf16(g), g.numel(), out.data_ptr(),
                         stream());
    ctx->save_for_backward({g, u});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    LADDER_OP_CLASS("activation");
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &g = saved[0], &u = saved[1];
    const c10::cuda::CUDAGuard device_guard(g.device());
    const torch::Tensor dy =
        grads[0].defined() ? grads[0].to(g.scalar_type()).contiguous() : torch::zeros_like(g);
    torch::Tensor d_gate = torch::empty_like(g), d_up = torch::empty_like(u);
    cuda::swiglu_backward(g.data_ptr(), u.data_ptr(), dy.data_ptr(), is_bf16(g), g.numel(),
                          d_gate.data_ptr(), d_up.data_ptr(), stream());
    return {d_gate, d_up};
  }
};

torch::Tensor rotate_on_device(const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin, int direction) {
  const torch::Tensor input = x.contiguous();
  torch::Tensor out = torch::empty_like(input);
  cuda::rotary(input.data_ptr(), is_bf16(input), cos.data_ptr<float>(), sin.data_ptr<float>(),
               x.size(0), x.size(1), x.size(2), x.size(3), direction, out.data_ptr(), stream());
  return out;
}

struct CudaRotaryQkFunction : torch::autograd::Function<CudaRotaryQkFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& cos, const torch::Tensor& sin) {
    const c10::cuda::CUDAGuard device_guard(q.device());
    const torch::Tensor c = cos.contiguous(), s = sin.contiguous();
    ctx->saved_data["cos"] = c;
    ctx->saved_data["sin"] = s;
    return {rotate_on_device(q, c, s, +1), rotate_on_device(k, c, s, +1)};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    LADDER_OP_CLASS("rotary");
    const torch::Tensor c = ctx->saved_data["cos"].toTensor(),
                        s = ctx->saved_data["sin"].toTensor();
    const c10::cuda::CUDAGuard device_guard(c.device());
    // The rotation by the opposite angle (autograd casts the result to q's and k's types).
    auto back = [&](const torch::Tensor& g) {
      if (!g.defined()) return torch::Tensor();
      return rotate_on_device(fp32_or_bf16(g) ? g : g.to(at::kFloat), c, s, -1);
    };
    return {back(grads[0]), back(grads[1]), {}, {}};
  }
};

// Inputs: logits [tokens, vocab], targets; outputs {loss, lse}. The backward overwrites the saved
// logits with their gradient (nothing else reads them: the product that made them saves its
// inputs), so the step holds one [tokens, vocab] buffer in the logits' type, never an fp32 one.
struct CudaCrossEntropyFunction : torch::autograd::Function<CudaCrossEntropyFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& targets, double scale) {
    const c10::cuda::CUDAGuard device_guard(logits.device());
    const torch::Tensor x = logits.contiguous(), y = targets.contiguous();
    const int64_t rows = x.size(0), vocab = x.size(1);
    const auto f32 = x.options().dtype(at::kFloat);
    torch::Tensor loss = torch::empty({rows}, f32), lse = torch::empty({rows}, f32);
    cuda::cross_entropy_forward(x.data_ptr(), is_bf16(x), y.data_ptr<int64_t>(),
                                static_cast<float>(scale), rows, vocab, loss.data_ptr<float>(),
                                lse.data_ptr<float>(), stream());
    ctx->save_for_backward({x, y, lse});
    ctx->saved_data["scale"] = scale;
    return {loss, lse};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    LADDER_OP_CLASS("loss");
    auto saved = ctx->get_saved_variables();
    torch::Tensor x = saved[0];
    const torch::Tensor &y = saved[1], &lse = saved[2];
    const c10::cuda::CUDAGuard device_guard(x.device());
    const torch::Tensor d_loss =
        grads[0].defined() ? grads[0].to(at::kFloat).contiguous() : torch::zeros_like(lse);
    const torch::Tensor d_lse =
        grads[1].defined() ? grads[1].to(at::kFloat).contiguous() : torch::Tensor();
    cuda::cross_entropy_backward_in_place(x.data_ptr(), is_bf16(x), y.data_ptr<int64_t>(),
                                          static_cast<float>(ctx->saved_data["scale"].toDouble()),
                                          lse.data_ptr<float>(), d_loss.data_ptr<float>(),
                                          d_lse.defined() ? d_lse.data_ptr<float>() : nullptr,
                                          x.size(0), x.size(1), stream());
    return {x, {}, {}};
  }
};

}  // namespace

std::optional<AddNormOutput> cuda_add_rms_norm(const torch::Tensor& residual,
                                               const torch::Tensor& branch, double scale,
                                               const torch::Tensor& gain, double eps,
                                               bool bf16_normed) {
  if (!cuda_kernels_on() || !residual.is_cuda() || residual.scalar_type() != at::kFloat ||
      residual.dim() < 1 || residual.size(-1) == 0 || gain.dim() != 1 ||
      gain.size(0) != residual.size(-1) || gain.scalar_type() != at::kFloat ||
      gain.device() != residual.device())
    return std::nullopt;
  if (branch.defined() && (branch.sizes() != residual.sizes() || !fp32_or_bf16(branch) ||
                           branch.device() != residual.device()))
    return std::nullopt;
  const variable_list out =
      CudaAddRmsNormFunction::apply(residual, branch, gain, scale, eps, bf16_normed);
  if (branch.defined()) return AddNormOutput{out[0], out[1]};
  return AddNormOutput{torch::Tensor(), out[0]};
}

torch::Tensor cuda_swiglu(const torch::Tensor& gate, const torch::Tensor& up) {
  if (!cuda_kernels_on() || !gate.is_cuda() || !fp32_or_bf16(gate) ||
      up.scalar_type() != gate.scalar_type() || up.sizes() != gate.sizes() ||
      up.device() != gate.device())
    return {};
  return CudaSwigluFunction::apply(gate, up);
}

std::optional<std::pair<torch::Tensor, torch::Tensor>> cuda_rotary_qk(const torch::Tensor& q,
                                                                      const torch::Tensor& k,
                                                                      const torch::Tensor& cos,
                                                                      const torch::Tensor& sin) {
  if (!cuda_kernels_on() || !q.is_cuda() || !fp32_or_bf16(q) ||
      k.scalar_type() != q.scalar_type() || k.device() != q.device() ||
      cos.device() != q.device() || sin.device() != q.device() || cos.scalar_type() != at::kFloat ||
      sin.scalar_type() != at::kFloat || q.dim() != 4 || k.dim() != 4 || q.size(0) != k.size(0) ||
      q.size(1) != k.size(1) || q.size(3) != k.size(3) || q.size(3) % 2 != 0 || cos.dim() != 2 ||
      cos.size(0) < q.size(1) || cos.size(1) != q.size(3) / 2 || sin.sizes() != cos.sizes())
    return std::nullopt;
  const variable_list out = CudaRotaryQkFunction::apply(q, k, cos, sin);
  return std::make_pair(out[0], out[1]);
}

bool cuda_readout_cross_entropy_serves(const torch::Tensor& hidden, const torch::Tensor& weight,
                                       const torch::Tensor& targets) {
  return cuda_kernels_on() && hidden.is_cuda() && weight.device() == hidden.device() &&
         targets.device() == hidden.device() && fp32_or_bf16(hidden) &&
         weight.scalar_type() == hidden.scalar_type() && hidden.dim() == 2 && weight.dim() == 2 &&
         hidden.size(1) == weight.size(1) && targets.dim() == 1 &&
         targets.size(0) == hidden.size(0) && targets.scalar_type() == at::kLong;
}

ReadoutLoss cuda_readout_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                       const torch::Tensor& targets, double scale) {
  TORCH_CHECK(cuda_readout_cross_entropy_serves(hidden, weight, targets),
              "cuda_readout_cross_entropy: inputs the kernel does not serve");
  // Under autocast the product is bf16 (autocast's cast of the weight, cached for the step).
  const torch::Tensor logits = torch::matmul(hidden, weight.t());
  const variable_list out = CudaCrossEntropyFunction::apply(logits, targets, scale);
  return {out[0], out[1]};
}

#else  // a build without nvcc: nothing is served (set_cuda_kernels refuses to turn them on)

std::optional<AddNormOutput> cuda_add_rms_norm(const torch::Tensor&, const torch::Tensor&, double,
                                               const torch::Tensor&, double, bool) {
  return std::nullopt;
}
torch::Tensor cuda_swiglu(const torch::Tensor&, const torch::Tensor&) {
  return {};
}
std::optional<std::pair<torch::Tensor, torch::Tensor>> cuda_rotary_qk(const torch::Tensor&,
                                                                      const torch::Tensor&,
                                                                      const torch::Tensor&,
                                                                      const torch::Tensor&) {
  return std::nullopt;
}
bool cuda_readout_cross_entropy_serves(const torch::Tensor&, const torch::Tensor&,
                                       const torch::Tensor&) {
  return false;
}
ReadoutLoss cuda_readout_cross_entropy(const torch::Tensor&, const torch::Tensor&,
                                       const torch::Tensor&, double) {
  TORCH_CHECK(false, "cuda_readout_cross_entropy: this build has no CUDA kernels");
}

#endif

}  // namespace ladder::kernels
