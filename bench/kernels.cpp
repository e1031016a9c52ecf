// Each fused CPU kernel of kernels/ against its LibTorch composite at the shapes of a training step
// (tokens = micro-batch x seq): forward + backward and forward-only milliseconds, medians of
// repeats, with random upstream gradients; and AdamW over 26 M parameters.
//
//   build/bench/bench_kernels [--tokens 2048] [--d-model 512] [--ffn 1408] [--heads 8] [--vocab
//   257]
//                             [--precision fp32|bf16] [--threads 2] [--repeats 20]
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/op_profile.h"
#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/rms_norm.h"
#include "kernels/rotary.h"
#include "kernels/swiglu.h"
#include "models/precision.h"

namespace {

using Clock = std::chrono::steady_clock;

// Median milliseconds of `repeats` calls after two warm-ups.
double median_ms(const std::function<void()>& f, int repeats) {
  f(), f();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    const auto t = Clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Every input that requires grad: their gradients are dropped before each backward pass, so the
// timing holds no accumulation into old gradients.
std::vector<torch::Tensor> leaves;

// Forward, then backward of the outputs against fixed random gradients of their shapes and types.
void forward_backward(const std::function<std::vector<torch::Tensor>()>& f,
                      std::vector<torch::Tensor>& grads) {
  const std::vector<torch::Tensor> outputs = f();
  if (grads.empty())
    for (const auto& out : outputs)
      grads.push_back(torch::randn(out.sizes()).to(out.scalar_type()));
  for (auto& leaf : leaves)
    leaf.mutable_grad().reset();
  torch::autograd::backward(outputs, grads);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t tokens = 2048, d = 512, ffn = 1408, heads = 8, vocab = 257;
  int threads = 2, repeats = 20;
  std::string precision = "bf16";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (flag == "--tokens")
      tokens = v;
    else if (flag == "--d-model")
      d = v;
    else if (flag == "--ffn")
      ffn = v;
    else if (flag == "--heads")
      heads = v;
    else if (flag == "--vocab")
      vocab = v;
    else if (flag == "--threads")
      threads = static_cast<int>(v);
    else if (flag == "--repeats")
      repeats = static_cast<int>(v);
    else if (flag == "--precision")
      precision = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  at::set_num_threads(threads);
  ladder::keep_freed_cpu_memory();  // as `ladder train` does
  const auto act = precision == "bf16" ? torch::kBFloat16 : torch::kFloat32;
  const int64_t head_dim = d / heads, seq = 256, batch = std::max<int64_t>(1, tokens / seq);
  torch::manual_seed(0);
  auto leaf = [](torch::Tensor t) {
    leaves.push_back(t.requires_grad_(true));
    return t;
  };
  std::printf(
      "forward + backward ms (forward alone)  (%lld tokens, d %lld, ffn %lld, %s, %d "
      "threads)\nkernel           fused             composite         speed-up\n",
      (long long)tokens, (long long)d, (long long)ffn, precision.c_str(), threads);
  auto report = [&](const char* name, const std::function<std::vector<torch::Tensor>(bool)>& f) {
    std::vector<torch::Tensor> grads;
    const double fused =
        median_ms([&] { forward_backward([&] { return f(true); }, grads); }, repeats);
    const double composite =
        median_ms([&] { forward_backward([&] { return f(false); }, grads); }, repeats);
    if (std::getenv("LADDER_BENCH_OPS")) {  // where one fused forward + backward spends its time
      const ladder::OpProfile profile;
      forward_backward([&] { return f(true); }, grads);
      for (const auto& [op, s] : profile.seconds_by_name())
        if (s > 1e-4) std::printf("  %s: %.2f ms\n", op.c_str(), 1e3 * s);
    }
    const double fused_forward = median_ms([&] { f(true); }, repeats);
    const double composite_forward = median_ms([&] { f(false); }, repeats);
    std::printf("%-12s %7.2f (%5.2f)   %7.2f (%5.2f)   %5.2fx\n", name, fused, fused_forward,
                composite, composite_forward, composite / fused);
  };

  // The residual stream is fp32; the branch is the bf16 output of a matmul under autocast.
  const torch::Tensor x = leaf(torch::randn({tokens, d})),
                      branch = leaf(torch::randn({tokens, d}).to(act)),
                      gain = leaf(torch::ones({d}));
  report("add_rms_norm", [&](bool fused) {
    const auto out = ladder::kernels::add_rms_norm(x, branch, 1.0, gain, 1e-5, fused);
    return std::vector<torch::Tensor>{out.sum, out.normed};
  });
  report("rms_norm", [&](bool fused) {
    return std::vector<torch::Tensor>{ladder::kernels::rms_norm(x, gain, 1e-5, fused)};
  });
  const torch::Tensor q = leaf(torch::randn({batch, seq, heads, head_dim}).to(act)),
                      k = leaf(torch::randn({batch, seq, heads, head_dim}).to(act));
  const torch::Tensor angles =
      torch::outer(torch::arange(seq, torch::kFloat32), torch::rand({head_dim / 2}));
  const torch::Tensor cos = angles.cos(), sin = angles.sin();
  report("rotary_qk", [&](bool fused) {
    if (fused) {
      const auto [rq, rk] = ladder::kernels::rotary_qk(q, k, cos, sin);
      return std::vector<torch::Tensor>{rq, rk};
    }
    return std::vector<torch::Tensor>{
        ladder::kernels::rotary_reference(q, cos.to(act), sin.to(act)),
        ladder::kernels::rotary_reference(k, cos.to(act), sin.to(act))};
  });
  // Attention over the same q, k and v, as [batch, heads, seq, head_dim] views.
  const torch::Tensor v_in = leaf(torch::randn({batch, seq, heads, head_dim}).to(act));
  report("attention", [&](bool fused) {
    const torch::Tensor qt = q.transpose(1, 2), kt = k.transpose(1, 2), vt = v_in.transpose(1, 2);
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    return std::vector<torch::Tensor>{
        fused ? ladder::kernels::causal_attention(qt, kt, vt, scale)
              : at::scaled_dot_product_attention(qt, kt, vt, {}, 0.0, true, scale)};
  });
  const torch::Tensor gate = leaf(torch::randn({tokens, ffn}).to(act)),
                      up = leaf(torch::randn({tokens, ffn}).to(act));
  report("swiglu", [&](bool fused) {
    return std::vector<torch::Tensor>{ladder::kernels::swiglu(gate, up, fused)};
  });
  const torch::Tensor hidden = leaf(torch::randn({tokens, d})),
                      weight = leaf(0.05 * torch::randn({vocab, d}));
  const torch::Tensor targets = torch::randint(0, vocab, {tokens});
  report("readout_ce", [&](bool fused) {
    const ladder::models::WeightCastCache casts;
    const ladder::models::Autocast autocast(torch::kCPU, act == torch::kBFloat16);
    const auto out =
        fused ? ladder::kernels::readout_cross_entropy(hidden, weight, targets, 1.0)
              : ladder::kernels::readout_cross_entropy_reference(hidden, weight, targets, 1.0);
    return std::vector<torch::Tensor>{out.loss.mean(), out.lse.square().mean()};
  });
  // AdamW over 26 M parameters (the d_model 512 / 8-layer model), one flat tensor.
  const int64_t n = 26'000'000;
  torch::Tensor p = torch::randn({n}), g = torch::randn({n}), m = torch::zeros({n}),
                v = torch::zeros({n});
  const ladder::kernels::AdamWHyper h{1e-3, 0.1, 0.9, 0.95, 1e-8, 1};
  const double fused = median_ms([&] { ladder::kernels::adamw_update(p, g, m, v, h); }, repeats);
  const double composite =
      median_ms([&] { ladder::kernels::adamw_update_reference(p, g, m, v, h); }, repeats);
  std::printf(
      "%-12s %7.2f           %7.2f           %5.2fx   (26 M fp32 parameters: %.1f GB/s "
      "fused)\n",
      "adamw", fused, composite, composite / fused, 7.0 * 4 * n / (fused * 1e6));
  return 0;
}
