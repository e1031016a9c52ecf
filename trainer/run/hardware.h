// What each rank computes on: its LibTorch threads, its device and the precision of its matrix
// products. Resolved once at start on every rank, before the recipe is printed, so that the
// resolved recipe, the log and the trace say what actually ran.
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "parallel/communicator.h"
#include "parallel/world.h"
#include "trainer/recipe/recipe.h"

namespace ladder {

// Sets this rank's intra-op threads (train.threads, else the cores it may run on shared with the
// other ranks of its node; fills train.threads) and selects its device (cuda: GPU local_rank mod
// the visible GPUs). Throws ladder::Error when train.device = "cuda" and no GPU is visible. Local:
// run it inside check_on_every_rank.
void resolve_threads_and_device(Recipe& recipe, const parallel::MpiWorld& world);

// Resolves train.precision = "auto": bf16 on CUDA and on CPUs whose bf16 matmul runs at least twice
// as fast as fp32 (measured here), fp32 otherwise; bf16 only if every rank would take it.
// Collective over the world; after resolve_threads_and_device.
void resolve_precision(Recipe& recipe, const parallel::MpiWorld& world);

// The device this rank trains on (after resolve_hardware).
c10::Device train_device(const Recipe& recipe);

// GFLOP/s of an n x n x n matmul in `dtype` on `device` with this process's threads: the peak that
// MFU is stated against, and the measurement behind precision = "auto".
double measure_matmul_gflops(int64_t n, c10::ScalarType dtype = c10::kFloat,
                             c10::Device device = c10::kCPU);
// The same for an [m, k] x [k, n] product.
double measure_matmul_gflops(int64_t m, int64_t k, int64_t n, c10::ScalarType dtype,
                             c10::Device device);

// The peak that MFU is stated against: the job's (every rank's, summed; they share the machine when
// they share a node), in the precision the products run in. train.peak_gflops when given (per
// rank); else measured, as the best of a large cube (1024^3 on the CPU, 8192^3 on a GPU) and the
// model's own product shapes on a micro-batch (projections, MLP, readout, split over tp), so the
// peak bounds what the step's products reach (one 1024^3 cube alone can run slower than the
// model's products, and MFU then read above 100%). Collective over `world`.
struct MfuPeak {
  double gflops = 0;
  std::string source;  // what it is, for the log
};
MfuPeak mfu_peak(const Recipe& recipe, int64_t vocab, const parallel::Communicator& world);

// While alive and `on`: c10::cuda's sync-debug mode set to error, so that a call that waits for
// the GPU throws, naming itself (the check of train.sync_free_step's promise; LADDER_SYNC_DEBUG=1
// in `ladder train`, bench_train_step --sync-debug 1). Off: nothing.
class SyncDebugScope {
 public:
  explicit SyncDebugScope(bool on);
  ~SyncDebugScope();
  SyncDebugScope(const SyncDebugScope&) = delete;
  SyncDebugScope& operator=(const SyncDebugScope&) = delete;

 private:
  bool on_;
};

}  // namespace ladder
