// AdamW (Loshchilov and Hutter 2019) with decoupled weight decay and per-parameter learning-rate
// multipliers and decay:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p = p - lr * wd * p - lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - b1^t), v_hat = v /
//   (1 - b2^t)
// Parameters are fp32 and are their own master weights on CPU. The moments are kept by parameter
// name for checkpoints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/params.h"
#include "optim/config.h"
#include "optim/parametrization.h"

namespace ladder::optim {

class AdamW {
 public:
  AdamW(models::ParamStore& store, const OptimConfig& config, std::vector<ParamSettings> settings);

  // One update of every parameter with its .grad(), at learning rate `lr` (the schedule's value).
  void step(double lr);
  int64_t steps_taken() const { return t_; }

  // State for checkpoints: moments in ParamStore order.
  std::vector<torch::Tensor>& exp_avg() { return m_; }
  std::vector<torch::Tensor>& exp_avg_sq() { return v_; }
  void set_steps_taken(int64_t t) { t_ = t; }

 private:
  models::ParamStore& store_;
  OptimConfig config_;
  std::vector<ParamSettings> settings_;
  std::vector<torch::Tensor> m_, v_;
  int64_t t_ = 0;
};

// The global L2 norm of all gradients, computed in fp64 partial sums.
double global_grad_norm(const models::ParamStore& store);

// Scales every gradient by max_norm / norm when norm > max_norm (max_norm 0: no clipping).
void clip_grad_norm(models::ParamStore& store, double norm, double max_norm);

}  // namespace ladder::optim
