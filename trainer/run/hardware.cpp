#include "trainer/run/hardware.h"

#include <c10/cuda/CUDAFunctions.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "kernels/cuda.h"

namespace ladder {
namespace {

// The cores this process may run on (its affinity mask: mpirun may bind each rank to some), shared
// with the other ranks of the node when it is not bound.
int default_threads(const parallel::MpiWorld& world) {
  cpu_set_t set;
  CPU_ZERO(&set);
  const int allowed = sched_getaffinity(0, sizeof set, &set) == 0
                          ? CPU_COUNT(&set)
                          : static_cast<int>(std::thread::hardware_concurrency());
  const int node_cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, std::min(allowed, node_cores / std::max(1, world.local_size())));
}

}  // namespace

double measure_matmul_gflops(int64_t n, torch::ScalarType dtype, torch::Device device) {
  return measure_matmul_gflops(n, n, n, dtype, device);
}

double measure_matmul_gflops(int64_t m, int64_t k, int64_t n, torch::ScalarType dtype,
                             torch::Device device) {
  using Clock = std::chrono::steady_clock;
  torch::NoGradGuard no_grad;
  const auto options = torch::TensorOptions().dtype(dtype).device(device);
  const torch::Tensor a = torch::randn({m, k}, options), b = torch::randn({k, n}, options);
  auto sync = [&] {
    if (device.is_cuda()) c10::cuda::device_synchronize();
  };
  torch::Tensor c = torch::mm(a, b);  // warm-up: kernels chosen, pools started
  sync();
  // At least 3 products and 0.1 s, so that small or slow cases are still timed to a few percent.
  int reps = 0;
  const auto t0 = Clock::now();
  double seconds = 0;
  while (reps < 3 || seconds < 0.1) {
    c = torch::mm(a, b);
    sync();
    ++reps;
    seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return 2.0 * static_cast<double>(m * k * n) * reps / seconds / 1e9;
}

MfuPeak mfu_peak(const Recipe& r, int64_t vocab, const parallel::Communicator& world) {
  const bool bf16 = r.train.precision == Precision::Bf16;
  const torch::Device device = train_device(r);
  std::string what;
  double rank_peak = r.train.peak_gflops;
  if (rank_peak > 0) {
    what = "train.peak_gflops";
  } else {
    const torch::ScalarType dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
    const int64_t cube = device.is_cuda() ? 8192 : 1024;
    rank_peak = measure_matmul_gflops(cube, dtype, device);
    // The model's products on one micro-batch: rows x d_model into the attention projections, the
    // MLP's hidden and the readout, and back from the hidden (each split over tp). On the CPU a
    // product is measured on fewer rows when one would take more than ~4 GFLOP.
    const auto& m = r.model;
    const int64_t tp = r.parallel.tp, d = m.d_model;
    const int64_t hidden =
        std::max<int64_t>(1, (m.experts() > 0 ? m.moe.expert_ffn : m.ffn_hidden) / tp);
    const int64_t rows = r.train.micro_batch * r.data.seq_len * m.streams();
    const std::vector<std::pair<int64_t, int64_t>> shapes = {
        {d, std::max<int64_t>(1, d / tp)},
        {d, hidden},
        {hidden, d},
        {d, std::max<int64_t>(1, (vocab + tp - 1) / tp)}};
    double best_model = 0;
    for (const auto& [k, n] : shapes) {
      int64_t mm = rows;
      if (!device.is_cuda())
        mm = std::max<int64_t>(64,
                               std::min<int64_t>(rows, static_cast<int64_t>(2e9 / double(k * n))));
      best_model = std::max(best_model, measure_matmul_gflops(mm, k, n, dtype, device));
    }
    what = fmt::format(
        "measured {} matmul: the best of {}^3 ({:.1f}) and the model's products on "
        "{} rows ({:.1f})",
        bf16 ? "bf16" : "fp32", cube, rank_peak, rows, best_model);
    rank_peak = std::max(rank_peak, best_model);
  }
  torch::Tensor peaks = torch::tensor({rank_peak}, torch::kFloat64);
  world.all_reduce(peaks);  // every rank of the job computes
  return MfuPeak{peaks.item<double>(), fmt::format("{} x {}", world.size(), what)};
}

torch::Device train_device(const Recipe& r) {
  if (r.train.device == DeviceKind::Cuda) return {torch::kCUDA, c10::cuda::current_device()};
  return torch::kCPU;
}

void resolve_threads_and_device(Recipe& r, const parallel::MpiWorld& world) {
  if (r.train.threads == 0) {
    r.train.threads = default_threads(world);
    r.derived.push_back("train.threads");
  }
  at::set_num_threads(static_cast<int>(r.train.threads));

  if (r.train.device == DeviceKind::Cuda) {
    const int gpus = static_cast<int>(torch::cuda::device_count());
    if (gpus == 0)
      throw Error("train.device = \"cuda\"",
                  "no CUDA device is visible to this process (torch::cuda::device_count() = 0); "
                  "train on this machine with train.device = \"cpu\"");
    // One GPU per rank: the ranks of a node take its GPUs in order (wrapping around when there are
    // more ranks than GPUs, which works but shares them).
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(world.local_rank() % gpus));
    if (r.train.fused_cuda_kernels && !kernels::cuda_kernels_built())
      throw Error("train.fused_cuda_kernels",
                  "this build has no CUDA kernels (CMake found no nvcc when it was configured: "
                  "reconfigure with the CUDA toolkit on PATH, or set it to false)");
  }
}

void resolve_precision(Recipe& r, const parallel::MpiWorld& world) {
  if (r.train.precision == Precision::Auto) {
    bool bf16 = true;
    if (r.train.device == DeviceKind::Cpu) {
      const double fp32 = measure_matmul_gflops(1024, torch::kFloat32);
      const double bf16_gflops = measure_matmul_gflops(1024, torch::kBFloat16);
      bf16 = bf16_gflops >= 2.0 * fp32;
    }
    // Every rank must compute alike: bf16 only where no rank measured it slow.
    r.train.precision = world.count_failures(!bf16) == 0 ? Precision::Bf16 : Precision::Fp32;
    r.derived.push_back("train.precision");
  }
}

SyncDebugScope::SyncDebugScope(bool on) : on_(on) {
  if (on_) c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
}

SyncDebugScope::~SyncDebugScope() {
  if (on_) c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
}

}  // namespace ladder
