// AdamW (Loshchilov and Hutter 2019) with decoupled weight decay and per-parameter learning-rate
// multipliers, decay and eps (optim/parametrization.h):
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p = p - lr * wd * p - lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - b1^t), v_hat = v /
//   (1 - b2^t)
// Parameters are fp32 and are their own master weights on CPU. The moments are kept by parameter
// name for checkpoints.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "models/params.h"
#include "optim/config.h"
#include "optim/parametrization.h"

namespace ladder::optim {

// A contiguous piece of one parameter: elements [offset, offset + length) of its row-major
// flattening. An optimizer updates a list of them: every parameter whole, or, under ZeRO-1, the
// shard its data-parallel rank owns.
struct ParamSegment {
  size_t param = 0;  // index in the ParamStore
  int64_t offset = 0;
  int64_t length = 0;
};

std::vector<ParamSegment> whole_params(const models::ParamStore& store);

// How the update runs (not recipe keys of [optim]; the run context sets them).
struct AdamWKernels {
  bool fused = false;  // train.fused_kernels: kernels::adamw_update on the CPU
  // bf16 on the CPU with fused kernels: the fused update also writes each whole parameter's bf16
  // copy for the next forward (kernels::remember_bf16_copy).
  bool bf16_weight_copies = false;
  // ATen's multi-tensor at::_fused_adamw_: one kernel per group of segments sharing a learning-rate
  // multiplier, weight decay and eps (instead of nine _foreach_ passes), which also takes the
  // clipping and the finite check from device tensors (UpdateGuard), so that the update needs
  // nothing from the host. The same update as the composite to fp32 rounding, not bitwise.
  bool aten_fused = false;
};

// What a sync-free step gives the update instead of host numbers: 0-d fp32 tensors on the
// parameters' device (undefined: no clipping, never skipped). With AdamWKernels::aten_fused only.
struct UpdateGuard {
  torch::Tensor clip_divisor;  // the gradients are divided by it (clip_divisor() below)
  torch::Tensor found_inf;     // nonzero: the update is skipped (parameters and moments untouched)
};

class AdamW {
 public:
  // Updates every parameter.
  AdamW(models::ParamStore& store, const OptimConfig& config, std::vector<ParamSettings> settings,
        AdamWKernels kernels = {});
  // Updates only `segments`; the moments exist only for them.
  AdamW(models::ParamStore& store, const OptimConfig& config, std::vector<ParamSettings> settings,
        std::vector<ParamSegment> segments, AdamWKernels kernels = {});

  // One update of the segments with their parameters' .grad(), at learning rate `lr` (the
  // schedule's value); `update_guard` needs AdamWKernels::aten_fused.
  void step(double lr, const UpdateGuard& update_guard = {});
  // The AdamWKernels::aten_fused update in its two parts, so that a captured CUDA graph
  // (trainer/run/step_graph.h) replays the second: begin_step counts the step and writes its
  // numbers (the step count, the learning rate) into device scalars; launch_update launches the
  // kernels, which read them there (no launch carries a number of the step). step() is both.
  void begin_step(double lr);
  void launch_update(const UpdateGuard& update_guard);
  int64_t steps_taken() const { return t_; }
  const std::vector<ParamSettings>& settings() const { return settings_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  // Zero moments and step count, as a fresh optimizer (DiLoCo's inner state reset at outer steps).
  void reset_state();

  // State for checkpoints: the moments of segment k, flat, of its length.
  const std::vector<ParamSegment>& segments() const { return segments_; }
  torch::Tensor& exp_avg(size_t k) { return m_[k]; }
  torch::Tensor& exp_avg_sq(size_t k) { return v_[k]; }

 private:
  // The update through kernels::adamw_update, one pass per segment; false (nothing done) where the
  // kernel does not serve every segment.
  bool fused_step(double lr);
  using GroupKey = std::tuple<double, double, double, int, std::string>;
  struct Group;
  std::map<GroupKey, Group> aten_groups();

  models::ParamStore& store_;
  OptimConfig config_;
  AdamWKernels kernels_;
  std::vector<ParamSettings> settings_;
  std::vector<ParamSegment> segments_;
  std::vector<torch::Tensor> m_, v_;
  std::vector<torch::Tensor> bf16_copies_;  // per segment covering a whole parameter, when asked
  int64_t t_ = 0;
  // aten_fused: the step's count and learning rate as fp32 scalars on the parameters' device.
  torch::Tensor device_steps_, device_lr_;
};

// The segment of a parameter's value or gradient as a flat tensor sharing its storage.
torch::Tensor segment_of(const torch::Tensor& tensor, const ParamSegment& segment);

// The sum of squared gradient elements over the segments, from one fp32 norm per segment added in
// fp64: the square of the global gradient norm when the segments cover every parameter, one rank's
// share of it under ZeRO-1 (the trainer sums the shares over the data-parallel ranks).
double grad_square_sum(const models::ParamStore& store, const std::vector<ParamSegment>& segments);
// The same as a 0-d fp64 tensor on `device` (zero where no segment has a gradient), read by nobody
// on the host.
torch::Tensor grad_square_sum_on_device(const models::ParamStore& store,
                                        const std::vector<ParamSegment>& segments,
                                        const torch::Device& device);

// Scales the segments' gradients by max_norm / norm when norm > max_norm (max_norm 0: no
// clipping).
void clip_grads(models::ParamStore& store, const std::vector<ParamSegment>& segments, double norm,
                double max_norm);

// The same clipping computed on the device from the norm as a tensor: (norm + 1e-6) / max_norm
// where norm > max_norm, else 1 (max_norm 0: 1), as a 0-d fp32 tensor on the norm's device, for
// UpdateGuard::clip_divisor. Dividing by it is clip_grads's factor to fp32 rounding.
torch::Tensor clip_divisor(const torch::Tensor& norm, double max_norm);

// 1 where any of the 0-d tensors is not finite, else 0: a 0-d fp32 tensor for
// UpdateGuard::found_inf.
torch::Tensor found_non_finite(const std::vector<torch::Tensor>& values);

}  // namespace ladder::optim
