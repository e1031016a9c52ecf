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
  const auto all = whole_params(store);
  const double norm = std::sqrt(grad_square_sum(store, all));
  EXPECT_DOUBLE_EQ(norm, 5.0);
  clip_grads(store, all, norm, 1.0);
  EXPECT_NEAR(std::sqrt(grad_square_sum(store, all)), 1.0, 1e-6);
  clip_grads(store, all, 1.0, 2.0);  // under the limit: unchanged
  EXPECT_NEAR(std::sqrt(grad_square_sum(store, all)), 1.0, 1e-6);
  // Shards: the squares of disjoint pieces add up to the whole; clipping touches only the pieces.
  const std::vector<ParamSegment> first{{0, 0, 1}}, rest{{0, 1, 1}, {1, 0, 1}};
  EXPECT_NEAR(grad_square_sum(store, first) + grad_square_sum(store, rest),
              grad_square_sum(store, all), 1e-12);
  store.all()[0].value.mutable_grad() = torch::tensor({3.0f, 0.0f});
  store.all()[1].value.mutable_grad() = torch::tensor({4.0f});
  clip_grads(store, rest, 5.0, 1.0);
  EXPECT_FLOAT_EQ(store.all()[0].value.grad()[0].item<float>(), 3.0f);
  EXPECT_NEAR(store.all()[1].value.grad()[0].item<float>(), 0.8f, 1e-6);
}

TEST(AdamW, SegmentsUpdateExactlyLikeTheWholeParameter) {
  // ZeRO-1 splits parameters into pieces; the update of each element must not depend on the cut.
  models::ParamStore whole_store, cut_store;
  for (auto* store : {&whole_store, &cut_store}) {
    store->add("w", Role::Hidden, InitKind::Normal, {5, 3}, {0, 1}, 3);
    store->add("b", Role::Vector, InitKind::Ones, {4}, {0}, 1);
    initialize(*store, MupConfig{"sp", 4}, 7);
  }
  OptimConfig config{1e-2, 0.1, 0.9, 0.95, 1e-8, 1.0, 0};
  const auto settings = param_settings(whole_store, config, MupConfig{"sp", 4});
  AdamW whole(whole_store, config, settings);
  // Two pieces of w (one crossing a row), b whole; w's middle element left to another rank.
  AdamW cut(cut_store, config, settings, {{0, 0, 7}, {0, 8, 7}, {1, 0, 4}});
  torch::manual_seed(5);
  for (int step = 0; step < 3; ++step) {
    const torch::Tensor gw = torch::randn({5, 3}), gb = torch::randn({4});
    for (auto* store : {&whole_store, &cut_store}) {
      store->all()[0].value.mutable_grad() = gw.clone();
      store->all()[1].value.mutable_grad() = gb.clone();
    }
    whole.step(1e-2);
    cut.step(1e-2);
  }
  const torch::Tensor a = whole_store.get("w").value.view(-1),
                      b = cut_store.get("w").value.view(-1);
  EXPECT_TRUE(torch::equal(a.narrow(0, 0, 7), b.narrow(0, 0, 7)));
  EXPECT_TRUE(torch::equal(a.narrow(0, 8, 7), b.narrow(0, 8, 7)));
  EXPECT_FALSE(torch::equal(a.narrow(0, 7, 1), b.narrow(0, 7, 1)));  // not this optimizer's
  EXPECT_TRUE(torch::equal(whole_store.get("b").value, cut_store.get("b").value));
  EXPECT_TRUE(torch::equal(whole.exp_avg(0).narrow(0, 8, 7), cut.exp_avg(1)));
  EXPECT_THROW(AdamW(cut_store, config, settings, {{1, 2, 3}}), std::invalid_argument);
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
