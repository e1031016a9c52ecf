#include <gtest/gtest.h>

#include <cmath>

#include "models/params.h"
#include "optim/adamw.h"
#include "optim/parametrization.h"
#include "optim/schedule.h"

namespace ladder::optim {
namespace {

using models::InitKind;
using models::Role;

TEST(AdamW, MatchesLibTorchAdamW) {
  // Two parameters with weight decay, one without: compare against torch::optim::AdamW, which
  // applies the same decoupled decay (p *= 1 - lr * wd) and bias corrections.
  models::ParamStore store;
  store.add("w", Role::Hidden, InitKind::Normal, {4, 3}, {0, 1}, 3);
  store.add("b", Role::Vector, InitKind::Ones, {4}, {0}, 1);
  initialize(store, MupConfig{"sp", 4}, 1);
  OptimConfig config{1e-2, 0.1, 0.9, 0.95, 1e-8, 1.0, 0};
  AdamW mine(store, config, param_settings(store, config, MupConfig{"sp", 4}));

  torch::Tensor w = store.get("w").value.detach().clone().requires_grad_(true);
  torch::Tensor b = store.get("b").value.detach().clone().requires_grad_(true);
  torch::optim::AdamW reference(
      std::vector<torch::optim::OptimizerParamGroup>{
          torch::optim::OptimizerParamGroup(
              {w},
              std::make_unique<torch::optim::AdamWOptions>(
                  torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1))),
          torch::optim::OptimizerParamGroup(
              {b}, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(1e-2)
                                                                    .betas({0.9, 0.95})
                                                                    .eps(1e-8)
                                                                    .weight_decay(0.0)))},
      torch::optim::AdamWOptions(1e-2));
  torch::manual_seed(3);
  for (int step = 0; step < 5; ++step) {
    const torch::Tensor gw = torch::randn({4, 3}), gb = torch::randn({4});
    store.all()[0].value.mutable_grad() = gw.clone();
    store.all()[1].value.mutable_grad() = gb.clone();
    w.mutable_grad() = gw.clone();
    b.mutable_grad() = gb.clone();
    mine.step(1e-2);
    reference.step();
  }
  EXPECT_TRUE(torch::allclose(store.get("w").value, w, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(store.get("b").value, b, 1e-6, 1e-6));
  EXPECT_EQ(mine.steps_taken(), 5);
}

TEST(Parametrization, WeightDecayOnMatricesOnly) {
  models::ParamStore store;
  store.add("e", Role::Embedding, InitKind::Normal, {5, 4}, {1}, 1);
  store.add("h", Role::Hidden, InitKind::Normal, {4, 4}, {0, 1}, 4);
  store.add("r", Role::Readout, InitKind::Normal, {5, 4}, {1}, 4);
  store.add("g", Role::Vector, InitKind::Ones, {4}, {0}, 1);
  OptimConfig config{1e-3, 0.1, 0.9, 0.95, 1e-8, 1.0, 0};
  const auto s = param_settings(store, config, MupConfig{"sp", 4});
  EXPECT_DOUBLE_EQ(s[0].weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(s[1].weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(s[2].weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(s[3].weight_decay, 0.0);
  EXPECT_THROW(param_settings(store, config, MupConfig{"mup", 4}), std::exception);
}

TEST(Clipping, ScalesToTheMaximumNorm) {
  models::ParamStore store;
  store.add("a", Role::Vector, InitKind::Zeros, {2}, {}, 1);
  store.add("b", Role::Vector, InitKind::Zeros, {1}, {}, 1);
  store.all()[0].value.mutable_grad() = torch::tensor({3.0f, 0.0f});
  store.all()[1].value.mutable_grad() = torch::tensor({4.0f});
  const double norm = global_grad_norm(store);
  EXPECT_DOUBLE_EQ(norm, 5.0);
  clip_grad_norm(store, norm, 1.0);
  EXPECT_NEAR(global_grad_norm(store), 1.0, 1e-6);
  clip_grad_norm(store, 1.0, 2.0);  // under the limit: unchanged
  EXPECT_NEAR(global_grad_norm(store), 1.0, 1e-6);
}

ScheduleConfig schedule(const std::string& kind, int64_t warmup) {
  ScheduleConfig s;
  s.kind = kind, s.warmup = warmup, s.final_lr_fraction = 0.1, s.decay_fraction = 0.2;
  s.decay_shape = "linear";
  return s;
}

TEST(Schedule, WarmupThenShapes) {
  EXPECT_DOUBLE_EQ(lr_at(0, 100, 1.0, schedule("cosine", 10)), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(9, 100, 1.0, schedule("cosine", 10)), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(10, 100, 1.0, schedule("cosine", 10)), 1.0);  // cosine starts at the peak
  EXPECT_NEAR(lr_at(99, 100, 1.0, schedule("cosine", 10)), 0.1, 1e-12);  // and ends at f * peak
  const double mid = lr_at(10 + 89 / 2, 100, 1.0, schedule("cosine", 10));
  EXPECT_NEAR(mid, 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 44.0 / 89.0)), 1e-12);
  EXPECT_DOUBLE_EQ(lr_at(50, 100, 2.0, schedule("constant", 10)), 2.0);
  // wsd: stable until the last 20% (step 80), then linear to 0.1.
  EXPECT_DOUBLE_EQ(lr_at(79, 100, 1.0, schedule("wsd", 10)), 1.0);
  EXPECT_NEAR(lr_at(80, 100, 1.0, schedule("wsd", 10)), 0.1 + 0.9 * (1 - 1.0 / 20), 1e-12);
  EXPECT_NEAR(lr_at(99, 100, 1.0, schedule("wsd", 10)), 0.1, 1e-12);
  ScheduleConfig sqrt_shape = schedule("wsd", 10);
  sqrt_shape.decay_shape = "1-sqrt";
  EXPECT_NEAR(lr_at(84, 100, 1.0, sqrt_shape), 0.1 + 0.9 * (1 - std::sqrt(5.0 / 20)), 1e-12);
}

}  // namespace
}  // namespace ladder::optim
