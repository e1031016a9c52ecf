// Mixed precision (Micikevicius et al. 2018, with bf16 instead of fp16 and no loss scaling),
// through LibTorch's autocast: parameters, gradients and optimizer state stay fp32 (the master
// copy); inside an Autocast scope, matrix products and attention run in bf16 on the scope's device.
// The blocks keep norm statistics, the softmax inside attention and the losses in fp32 (blocks.h,
// tensor_parallel.h), and the residual stream stays fp32 (fp32 + bf16 promotes to fp32).
#pragma once

#include <torch/torch.h>

namespace ladder::models {

// bf16 compute on `device` for this scope when `bf16`; nothing otherwise. Autocast keeps the bf16
// copy of each fp32 leaf weight it casts until the outermost scope on the thread (Autocast or
// WeightCastCache) ends: the training step holds a WeightCastCache around its micro-batches, so a
// weight is cast once per step however many micro-batches there are. Gradients flow back to the
// fp32 weights through the casts.
class Autocast {
 public:
  Autocast(torch::Device device, bool bf16);
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  c10::DeviceType device_;
  bool active_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

// Keeps autocast's weight casts alive for the scope and drops them at its end (they are stale once
// the optimizer updates the weights, and casts made under NoGradGuard carry no gradient path).
class WeightCastCache {
 public:
  WeightCastCache();
  ~WeightCastCache();
  WeightCastCache(const WeightCastCache&) = delete;
  WeightCastCache& operator=(const WeightCastCache&) = delete;
};

// Autocast off on `device` for the scope (and restored after): computations whose result must not
// depend on bf16 rounding, such as a router's choice of experts or a state-space scan's
// exponentials.
class NoAutocast {
 public:
  explicit NoAutocast(c10::DeviceType device);
  ~NoAutocast();
  NoAutocast(const NoAutocast&) = delete;
  NoAutocast& operator=(const NoAutocast&) = delete;

 private:
  c10::DeviceType device_;
  bool was_enabled_;
};

}  // namespace ladder::models
