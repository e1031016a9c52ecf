// Central finite differences in double precision against autograd, shared by the model suites.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include <torch/torch.h>

#include "models/params.h"

namespace ladder::models {

// Central finite differences in double precision against autograd, at 12 coordinates of every leaf.
// `f` computes from the leaves (double tensors that require grad); its output is reduced with fixed
// random weights so that every output element matters.
inline void expect_gradients_match(const std::function<torch::Tensor()>& f,
                                   const std::vector<torch::Tensor>& leaves) {
  torch::manual_seed(0);
  torch::Tensor weights;
  {
    torch::NoGradGuard no_grad;
    weights = torch::randn_like(f());
  }
  auto objective = [&] { return (f() * weights).sum(); };
  for (const auto& x : leaves)
    if (x.grad().defined()) x.mutable_grad().zero_();
  objective().backward();
  const double eps = 1e-6;
  for (size_t i = 0; i < leaves.size(); ++i) {
    const torch::Tensor grad = leaves[i].grad();
    ASSERT_TRUE(grad.defined()) << "leaf " << i << " has no gradient";
    const int64_t n = leaves[i].numel();
    for (int trial = 0; trial < 12; ++trial) {
      const int64_t k = (trial * 7919 + 13) % n;
      torch::NoGradGuard no_grad;
      torch::Tensor flat = leaves[i].view(-1);
      const double original = flat[k].item<double>();
      flat[k] = original + eps;
      const double plus = objective().item<double>();
      flat[k] = original - eps;
      const double minus = objective().item<double>();
      flat[k] = original;
      const double numeric = (plus - minus) / (2 * eps);
      EXPECT_NEAR(grad.view(-1)[k].item<double>(), numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
          << "leaf " << i << " element " << k;
    }
  }
}

inline torch::Tensor leaf(const torch::Tensor& t) {
  return t.to(torch::kFloat64).detach().requires_grad_(true);
}

// Every parameter of `store` in fp64 (every handle to a tensor sees the change).
inline void to_double(ParamStore& store) {
  for (auto& p : store.all()) {
    torch::NoGradGuard no_grad;
    p.value.set_data(p.value.to(torch::kFloat64));
  }
}

}  // namespace ladder::models
