#include "trainer/run/memory_estimate.h"

#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "core/format.h"
#include "models/model.h"
#include "trainer/run/run_context.h"

namespace ladder {
namespace {

// Bytes of memory the kernel lets this process take: MemAvailable, capped by a cgroup v2 limit.
double node_available_bytes() {
  double available = 0;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (meminfo >> key >> kb >> unit)
    if (key == "MemAvailable:") available = kb * 1024;
  std::ifstream limit("/sys/fs/cgroup/memory.max");
  std::string text;
  if (limit >> text && text != "max") {
    const double cap = std::strtod(text.c_str(), nullptr);
    if (cap > 0) available = available > 0 ? std::min(available, cap) : cap;
  }
  return available;
}

}  // namespace

MemoryEstimate estimate_memory(const Recipe& r, int64_t vocab) {
  const auto& c = r.model;
  const auto& p = r.parallel;
  const double tp = static_cast<double>(p.tp), ep = static_cast<double>(p.ep);
  const models::StageCosts params =
      models::stage_costs(c, vocab, r.data.seq_len, parallel::StageBalance::Params);
  const std::vector<int64_t> layers = layers_per_virtual_stage(r, vocab);
  // Routed experts are split over ep: each rank holds 1/ep of each routed layer's experts.
  auto layer_params = [&](int64_t l) {
    double n = params.layers[static_cast<size_t>(l)];
    if (c.routed(l))
      n -= (1 - 1 / ep) * static_cast<double>(c.experts() * 3 * c.d_model * c.moe.expert_ffn);
    return n;
  };
  // The busiest stage by parameters (every rank of a stage holds 1/tp of its matrices).
  double stage_params_max = 0;
  for (int64_t stage = 0; stage < p.pp; ++stage) {
    double n = 0;
    int64_t begin = 0;
    for (int64_t v = 0; v < p.pp * p.virtual_stages; ++v) {
      if (v % p.pp == stage)
        for (int64_t l = begin; l < begin + layers[static_cast<size_t>(v)]; ++l)
          n += layer_params(l);
      begin += layers[static_cast<size_t>(v)];
    }
    if (stage == 0) n += params.first;
    if (stage == p.pp - 1) n += params.last - (c.tie_embeddings && p.pp == 1 ? params.first : 0.0);
    stage_params_max = std::max(stage_params_max, n / tp);
  }
  const bool bf16 = r.train.precision == Precision::Bf16;
  MemoryEstimate e;
  e.params = 4 * stage_params_max;
  e.grads = 4 * stage_params_max;  // fp32, in the flat bucket buffer
  const double zero_shards = r.optim.zero == 1 ? static_cast<double>(p.dp) : 1.0;
  e.optimizer = 8 * stage_params_max / zero_shards;  // AdamW's two fp32 moments
  if (bf16 && r.train.fused_kernels && r.train.device == DeviceKind::Cpu)
    e.weight_copies = 2 * stage_params_max;
  // Activations of one micro-batch on the stage with the most layers.
  int64_t stage_layers_max = 0;
  for (int64_t stage = 0; stage < p.pp; ++stage) {
    int64_t n = 0;
    for (int64_t v = stage; v < p.pp * p.virtual_stages; v += p.pp)
      n += layers[static_cast<size_t>(v)];
    stage_layers_max = std::max(stage_layers_max, n);
  }
  const double s = static_cast<double>(r.data.seq_len);
  const double b = static_cast<double>(r.train.micro_batch * c.streams());
  const double h = static_cast<double>(c.d_model), a = static_cast<double>(c.n_heads);
  const double bytes = bf16 ? 1.0 : 2.0;  // the formula's 16-bit figure, doubled in fp32
  const double per_layer = s * b * h * (34 + 5 * a * s / h) * bytes / tp;
  e.activations_per_microbatch = per_layer * static_cast<double>(stage_layers_max) +
                                 2 * 4 * s * b * static_cast<double>(vocab) / tp;
  // In flight on the first stage: 1F1B (and interleaved) keep up to pp micro-batches, GPipe all.
  e.microbatches_in_flight =
      p.pp == 1
          ? 1
          : std::min<int64_t>(p.microbatches,
                              p.schedule == parallel::ScheduleKind::GPipe ? p.microbatches : p.pp);
  return e;
}

double memory_per_rank(const Recipe& r, const parallel::MpiWorld& world) {
  if (r.train.device == DeviceKind::Cuda) {
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess) return 0;
    return static_cast<double>(free);
  }
  return node_available_bytes() / std::max(1, world.local_size());
}

std::string describe_memory(const MemoryEstimate& e, double available) {
  auto mb = [](double bytes) { return human_count(bytes) + "B"; };
  std::string s = "memory per rank (estimate): parameters " + mb(e.params) + " + gradients " +
                  mb(e.grads) + " + AdamW " + mb(e.optimizer);
  if (e.weight_copies > 0) s += " + bf16 weights " + mb(e.weight_copies);
  s += " + activations " + std::to_string(e.microbatches_in_flight) + " x " +
       mb(e.activations_per_microbatch) + " = " + mb(e.total());
  s += available > 0 ? "; " + mb(available) + " available per rank" : "; available memory unknown";
  return s;
}

void check_memory_fits(const MemoryEstimate& e, double available) {
  if (available > 0 && e.total() > available)
    throw Error("train", describe_memory(e, available) +
                             ": the run cannot fit; use more ranks (parallel.tp, parallel.pp, "
                             "optim.zero = 1), a smaller train.micro_batch, or bf16");
}

}  // namespace ladder
