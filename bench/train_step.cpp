// Throughput of one training step (forward, backward, clipping, AdamW) of the dense model, with the
// trainer's own code path and precision handling (models/precision.h). Prints tokens/s, model
// GFLOP/s, the fraction of the matmul peak measured in the step's precision on its device (MFU),
// and peak memory (RSS; on CUDA also the allocator's peak).
//
//   build/bench/bench_train_step --d-model 512 --layers 8 --heads 8 --seq 256 --batch 8 --threads 2
//                                [--precision fp32|bf16] [--device cpu|cuda] [--peak-tflops T]
//                                [--fused 1|0] [--profile 1]
// --fused 0 runs the LibTorch composites instead of kernels/' fused CPU kernels
// (train.fused_kernels);
// --profile 1 then times as many more steps under core/op_profile.h and prints the time per
// operator class (matmul, attention, norm, rotary, activation, loss, optimizer, cast, ...);
// --profile 2 also the 30 operators with the most self time.
#include <ATen/Parallel.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/memory.h"
#include "core/op_profile.h"
#include "models/model.h"
#include "models/precision.h"
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
  std::string precision = "fp32", device_name = "cpu";
  double peak_tflops = 0;  // a stated peak (a datasheet's) instead of the measured one
  bool fused = true, profile = false, profile_names = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (flag == "--precision")
      precision = argv[i + 1];
    else if (flag == "--device")
      device_name = argv[i + 1];
    else if (flag == "--peak-tflops")
      peak_tflops = std::atof(argv[i + 1]);
    else if (flag == "--d-model")
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
    else if (flag == "--fused")
      fused = v != 0;
    else if (flag == "--profile")
      profile = v != 0, profile_names = v > 1;
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  at::set_num_threads(threads);
  ladder::keep_freed_cpu_memory();  // as `ladder train` does
  if (precision != "fp32" && precision != "bf16") {
    std::fprintf(stderr, "--precision: fp32 or bf16\n");
    return 2;
  }
  const bool bf16 = precision == "bf16";
  if (device_name == "cuda" && !torch::cuda::is_available()) {
    std::fprintf(stderr, "--device cuda: no CUDA device is visible\n");
    return 2;
  }
  const torch::Device device = device_name == "cuda" ? torch::kCUDA : torch::kCPU;
  auto sync = [&] {
    if (device.is_cuda()) c10::cuda::device_synchronize();
  };

  ladder::models::ModelConfig c;
  c.arch = "dense", c.d_model = d_model, c.n_layers = layers, c.n_heads = heads;
  c.n_kv_heads = heads, c.ffn_hidden = (8 * d_model / 3 + 63) / 64 * 64;
  c.norm_eps = 1e-5, c.rope_theta = 10000, c.fused_kernels = fused;
  auto model = ladder::models::build_model(c, vocab, seq);
  // As the trainer: with fused kernels in bf16 on the CPU, AdamW writes the bf16 weights.
  const ladder::optim::OptimConfig oc{
      1e-3, 0.1, 0.9, 0.95, 1e-8, 1.0, 0, fused, fused && bf16 && device.is_cpu()};
  const auto settings =
      ladder::optim::param_settings(model->params().all(), ladder::optim::RuleInputs{.optim = oc});
  ladder::optim::initialize(model->params(), settings, 0);
  for (auto& p : model->params().all()) {
    torch::NoGradGuard no_grad;
    p.value.set_data(p.value.to(device));
  }
  ladder::optim::AdamW adamw(model->params(), oc, settings);
  const auto acc = model->accounting(seq);

  torch::manual_seed(0);
  const torch::Tensor tokens = torch::randint(0, vocab, {batch, seq + 1}).to(device);
  const torch::Tensor inputs = tokens.slice(1, 0, seq), targets = tokens.slice(1, 1);
  double t_forward = 0, t_backward = 0, t_optimizer = 0;
  auto step = [&] {
    auto t = Clock::now();
    for (auto& p : model->params().all())
      p.value.mutable_grad().reset();
    const ladder::models::WeightCastCache weight_casts;
    ladder::models::ModelOutput out;
    {
      const ladder::models::Autocast autocast(device, bf16);
      out = model->loss(inputs, targets);
    }
    sync();
    t_forward += seconds(t), t = Clock::now();
    out.objective.backward();
    sync();
    t_backward += seconds(t), t = Clock::now();
    const auto& segments = adamw.segments();
    const double norm = std::sqrt(ladder::optim::grad_square_sum(model->params(), segments));
    ladder::optim::clip_grads(model->params(), segments, norm, 1.0);
    adamw.step(1e-3);
    sync();
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
  const double peak = peak_tflops > 0 ? peak_tflops * 1e3
                                      : ladder::measure_matmul_gflops(
                                            device.is_cuda() ? 8192 : 1024,
                                            bf16 ? torch::kBFloat16 : torch::kFloat32, device);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf(
      "ladder  d_model=%lld layers=%lld heads=%lld seq=%lld batch=%lld vocab=%lld threads=%d "
      "precision=%s device=%s fused=%d\n",
      (long long)d_model, (long long)layers, (long long)heads, (long long)seq, (long long)batch,
      (long long)vocab, threads, precision.c_str(), device.str().c_str(), fused ? 1 : 0);
  std::printf("ladder  params %.2fM, %.1f MFLOP/token\n", acc.total_params / 1e6,
              acc.flops_per_token / 1e6);
  std::printf(
      "ladder  step %.3f s, %.0f tokens/s, %.1f model GFLOP/s, MFU %.1f%% of the %.1f GFLOP/s "
      "%s %s matmul peak, peak RSS %.0f MB\n",
      s / steps, tokens_per_s, model_gflops, 100 * model_gflops / peak, peak,
      peak_tflops > 0 ? "stated" : "measured", precision.c_str(), usage.ru_maxrss / 1024.0);
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
    std::printf("ladder  peak GPU memory allocated %.0f MB\n",
                stats.allocated_bytes[0].peak / 1048576.0);
  }
  std::printf("ladder  per step: forward %.3f s, backward %.3f s, clip + AdamW %.3f s\n",
              t_forward / steps, t_backward / steps, t_optimizer / steps);
  if (profile) {
    // Separate steps: the listener's own cost (a clock read per operator) stays out of the timing.
    std::map<std::string, double> by_class, by_name;
    double wall = 0;
    {
      const ladder::OpProfile op_profile;
      const auto t = Clock::now();
      for (int64_t i = 0; i < steps; ++i)
        step();
      wall = seconds(t);
      by_class = op_profile.seconds();
      by_name = op_profile.seconds_by_name();
    }
    double total = 0;
    for (const auto& [name, s] : by_class)
      total += s;
    std::vector<std::pair<double, std::string>> rows;
    for (const auto& [name, s] : by_class)
      rows.emplace_back(s, name);
    std::sort(rows.rbegin(), rows.rend());
    std::printf("profile  %lld steps, %.3f s per step (%.3f s inside operators), per class:\n",
                (long long)steps, wall / steps, total / steps);
    for (const auto& [s, name] : rows)
      std::printf("profile  %-12s %8.1f ms  %5.1f%%\n", name.c_str(), 1e3 * s / steps,
                  100 * s / total);
    if (profile_names) {
      std::vector<std::pair<double, std::string>> ops;
      for (const auto& [name, s] : by_name)
        ops.emplace_back(s, name);
      std::sort(ops.rbegin(), ops.rend());
      for (size_t i = 0; i < ops.size() && i < 30; ++i)
        std::printf("profile-op  %-60s %8.2f ms\n", ops[i].second.c_str(),
                    1e3 * ops[i].first / steps);
    }
  }
  std::printf("RESULT ladder_tokens_per_s %.1f\n", tokens_per_s);
  return 0;
}
