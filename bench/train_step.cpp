// Throughput of one training step (forward, backward, clipping, AdamW) of the dense model, with the
// trainer's own code path. Prints tokens/s, model GFLOP/s, the fraction of the measured fp32 matmul
// peak, and peak RSS.
//
//   build/bench/bench_train_step --d-model 512 --layers 8 --heads 8 --seq 256 --batch 8 --threads 2
#include <ATen/Parallel.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "models/model.h"
#include "optim/adamw.h"
#include "optim/parametrization.h"
#include "trainer/hardware.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a) {
  return std::chrono::duration<double>(Clock::now() - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  int64_t d_model = 512, layers = 8, heads = 8, seq = 256, batch = 8, vocab = 257, steps = 10;
  int threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (flag == "--d-model")
      d_model = v;
    else if (flag == "--layers")
      layers = v;
    else if (flag == "--heads")
      heads = v;
    else if (flag == "--seq")
      seq = v;
    else if (flag == "--batch")
      batch = v;
    else if (flag == "--vocab")
      vocab = v;
    else if (flag == "--steps")
      steps = v;
    else if (flag == "--threads")
      threads = static_cast<int>(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  at::set_num_threads(threads);

  ladder::models::ModelConfig c;
  c.arch = "dense", c.d_model = d_model, c.n_layers = layers, c.n_heads = heads;
  c.n_kv_heads = heads, c.ffn_hidden = (8 * d_model / 3 + 63) / 64 * 64;
  c.norm_eps = 1e-5, c.rope_theta = 10000;
  auto model = ladder::models::build_model(c, vocab, seq);
  const ladder::optim::MupConfig mup{"sp", d_model};
  const ladder::optim::OptimConfig oc{1e-3, 0.1, 0.9, 0.95, 1e-8, 1.0, 0};
  ladder::optim::initialize(model->params(), mup, 0);
  ladder::optim::AdamW adamw(model->params(), oc,
                             ladder::optim::param_settings(model->params(), oc, mup));
  const auto acc = model->accounting(seq);

  torch::manual_seed(0);
  const torch::Tensor tokens = torch::randint(0, vocab, {batch, seq + 1});
  const torch::Tensor inputs = tokens.slice(1, 0, seq), targets = tokens.slice(1, 1);
  double t_forward = 0, t_backward = 0, t_optimizer = 0;
  auto step = [&] {
    auto t = Clock::now();
    for (auto& p : model->params().all())
      p.value.mutable_grad().reset();
    const auto out = model->loss(inputs, targets);
    t_forward += seconds(t), t = Clock::now();
    out.objective.backward();
    t_backward += seconds(t), t = Clock::now();
    const auto& segments = adamw.segments();
    const double norm = std::sqrt(ladder::optim::grad_square_sum(model->params(), segments));
    ladder::optim::clip_grads(model->params(), segments, norm, 1.0);
    adamw.step(1e-3);
    t_optimizer += seconds(t);
    return out.loss.item<double>();
  };
  for (int i = 0; i < 2; ++i)
    step();  // warm-up: allocator, OpenMP pool
  t_forward = t_backward = t_optimizer = 0;
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < steps; ++i)
    step();
  const double s = seconds(t0);
  const double tokens_per_s = static_cast<double>(steps * batch * seq) / s;
  const double model_gflops = acc.flops_per_token * tokens_per_s / 1e9;
  const double peak = ladder::measure_matmul_gflops(1024);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf(
      "ladder  d_model=%lld layers=%lld heads=%lld seq=%lld batch=%lld vocab=%lld threads=%d\n",
      (long long)d_model, (long long)layers, (long long)heads, (long long)seq, (long long)batch,
      (long long)vocab, threads);
  std::printf("ladder  params %.2fM, %.1f MFLOP/token\n", acc.total_params / 1e6,
              acc.flops_per_token / 1e6);
  std::printf(
      "ladder  step %.3f s, %.0f tokens/s, %.1f model GFLOP/s, %.1f%% of the %.1f GFLOP/s "
      "fp32 matmul peak, peak RSS %.0f MB\n",
      s / steps, tokens_per_s, model_gflops, 100 * model_gflops / peak, peak,
      usage.ru_maxrss / 1024.0);
  std::printf("ladder  per step: forward %.3f s, backward %.3f s, clip + AdamW %.3f s\n",
              t_forward / steps, t_backward / steps, t_optimizer / steps);
  std::printf("RESULT ladder_tokens_per_s %.1f\n", tokens_per_s);
  return 0;
}
