#include <gtest/gtest.h>

#include <cmath>

#include "models/dense.h"
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
  initialize(store, param_settings(store.all(), {}), 1);
  OptimConfig config{1e-2, 0.1, 0.9, 0.95, 1e-8, 1.0, 0};
  AdamW mine(store, config, param_settings(store.all(), RuleInputs{.optim = config}));

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

// A model's parameters at width d (base width 64): one of each role, as the dense model registers
// them (fan-in d for the hidden and readout matrices).
models::ParamStore store_at_width(int64_t d) {
  models::ParamStore store;
  store.add("e", Role::Embedding, InitKind::Normal, {50, d}, {1}, 1);
  store.add("h", Role::Hidden, InitKind::Normal, {2 * d, d}, {0, 1}, d);
  store.add("o", Role::Hidden, InitKind::Normal, {d, 2 * d}, {0, 1}, 2 * d, 0.5);
  store.add("r", Role::Readout, InitKind::Normal, {50, d}, {1}, d);
  store.add("g", Role::Vector, InitKind::Ones, {d}, {0}, 1);
  return store;
}

RuleInputs inputs_at(const std::string& parametrization, int64_t d, int64_t layers = 4) {
  models::ModelConfig model;
  model.d_model = d;
  model.n_layers = layers;
  model.n_heads = 4;
  MupConfig mup;
  mup.parametrization = choice_value(kParametrizationNames, parametrization);
  mup.base_width = 64;
  return rule_inputs(mup, OptimConfig{1e-2, 0.1, 0.9, 0.95, 1e-8, 1.0, 0}, model, 1000, 1000000);
}

TEST(Parametrization, StandardRulesAtTwoWidths) {
  for (int64_t d : {64, 256}) {
    const auto s = param_settings(store_at_width(d).all(), inputs_at("sp", d));
    const double fan_in_std = 1 / std::sqrt(double(d));
    EXPECT_DOUBLE_EQ(s[0].init_std, 1.0);
    EXPECT_DOUBLE_EQ(s[1].init_std, fan_in_std);
    EXPECT_DOUBLE_EQ(s[2].init_std, 0.5 / std::sqrt(2.0 * d));
    EXPECT_DOUBLE_EQ(s[3].init_std, fan_in_std);
    for (const auto& p : s) {
      EXPECT_DOUBLE_EQ(p.lr_multiplier, 1.0);
      EXPECT_DOUBLE_EQ(p.eps, 1e-8);
    }
    EXPECT_DOUBLE_EQ(s[0].weight_decay, 0.1);
    EXPECT_DOUBLE_EQ(s[1].weight_decay, 0.1);
    EXPECT_DOUBLE_EQ(s[3].weight_decay, 0.1);
    EXPECT_DOUBLE_EQ(s[4].weight_decay, 0.0);  // vectors never decay
  }
}

TEST(Parametrization, MupRulesAtTwoWidthsMatchTheTable) {
  // At the base width 64 (m = 1) and at 256 (m = 4): sigma is the std at the base width.
  for (int64_t d : {64, 256}) {
    const double m = d / 64.0;
    const auto s = param_settings(store_at_width(d).all(), inputs_at("mup", d));
    const double sigma_hidden = 1 / std::sqrt(64.0), sigma_readout = 1 / std::sqrt(64.0);
    // embedding: std sigma, lr eta, wd lambda
    EXPECT_DOUBLE_EQ(s[0].init_std, 1.0);
    EXPECT_DOUBLE_EQ(s[0].lr_multiplier, 1.0);
    EXPECT_DOUBLE_EQ(s[0].weight_decay, 0.1);
    EXPECT_DOUBLE_EQ(s[0].eps, 1e-8);
    // hidden: std sigma / sqrt(m), lr eta / m, eps / m, wd lambda (the constant rule)
    EXPECT_NEAR(s[1].init_std, sigma_hidden / std::sqrt(m), 1e-15);
    EXPECT_NEAR(s[2].init_std, 0.5 / std::sqrt(128.0) / std::sqrt(m), 1e-15);
    for (int i : {1, 2}) {
      EXPECT_DOUBLE_EQ(s[i].lr_multiplier, 1 / m);
      EXPECT_DOUBLE_EQ(s[i].eps, 1e-8 / m);
      EXPECT_DOUBLE_EQ(s[i].weight_decay, 0.1);
    }
    // readout: std sigma (constant), lr eta, wd lambda
    EXPECT_NEAR(s[3].init_std, sigma_readout, 1e-15);
    EXPECT_DOUBLE_EQ(s[3].lr_multiplier, 1.0);
    EXPECT_DOUBLE_EQ(s[3].weight_decay, 0.1);
    // vector: lr eta, wd 0
    EXPECT_DOUBLE_EQ(s[4].lr_multiplier, 1.0);
    EXPECT_DOUBLE_EQ(s[4].weight_decay, 0.0);
  }
  RuleInputs zero = inputs_at("mup", 256);
  zero.mup.readout_zero_init = true;
  EXPECT_EQ(param_settings(store_at_width(256).all(), zero)[3].init_std, 0.0);
}

TEST(Parametrization, DenseModelAtTwoWidthsFollowsTheTable) {
  // The dense model's own parameters, base width 64, at m = 1 and m = 4 (4 layers).
  for (int64_t d : {64, 256}) {
    const double m = d / 64.0;
    models::ModelConfig c;
    c.arch = models::Arch::Dense, c.d_model = d, c.n_layers = 4, c.n_heads = 4, c.n_kv_heads = 4;
    c.ffn_hidden = 2 * d, c.norm_eps = 1e-5, c.rope_theta = 1e4;
    models::DenseTransformer model(c, 50, 8);
    const auto& params = model.params().all();
    const auto s = param_settings(params, inputs_at("mup", d));
    ASSERT_EQ(s.size(), params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      const models::Param& p = params[i];
      const std::string& n = p.name;
      SCOPED_TRACE(n + " at d_model " + std::to_string(d));
      const bool output =
          n.find("attn.wo") != std::string::npos || n.find("mlp.w_down") != std::string::npos;
      switch (p.role) {
        case Role::Embedding:
          EXPECT_EQ(n, "embedding");
          EXPECT_DOUBLE_EQ(s[i].init_std, 1.0);
          EXPECT_DOUBLE_EQ(s[i].lr_multiplier, 1.0);
          EXPECT_DOUBLE_EQ(s[i].weight_decay, 0.1);
          EXPECT_DOUBLE_EQ(s[i].eps, 1e-8);
          break;
        case Role::Hidden: {
          // sigma / sqrt(m), sigma the base width's fan-in std (x 1/sqrt(2 L) on outputs).
          const double base_fan_in = (n.find("w_down") != std::string::npos ? 2 * 64.0 : 64.0);
          const double sigma = 1 / std::sqrt(base_fan_in) * (output ? 1 / std::sqrt(8.0) : 1.0);
          EXPECT_NEAR(s[i].init_std, sigma / std::sqrt(m), 1e-15);
          EXPECT_DOUBLE_EQ(s[i].lr_multiplier, 1 / m);
          EXPECT_DOUBLE_EQ(s[i].eps, 1e-8 / m);
          EXPECT_DOUBLE_EQ(s[i].weight_decay, 0.1);
          break;
        }
        case Role::Readout:
          EXPECT_EQ(n, "readout");
          EXPECT_NEAR(s[i].init_std, 1 / std::sqrt(64.0), 1e-15);  // sigma at every width
          EXPECT_DOUBLE_EQ(s[i].lr_multiplier, 1.0);
          EXPECT_DOUBLE_EQ(s[i].weight_decay, 0.1);
          EXPECT_DOUBLE_EQ(s[i].eps, 1e-8);
          break;
        case Role::Vector:
          EXPECT_EQ(p.init, InitKind::Ones);
          EXPECT_DOUBLE_EQ(s[i].lr_multiplier, 1.0);
          EXPECT_DOUBLE_EQ(s[i].weight_decay, 0.0);
          EXPECT_DOUBLE_EQ(s[i].eps, 1e-8);
          break;
      }
    }
  }
}

TEST(Parametrization, MupAtTheBaseWidthIsTheStandardParametrization) {
  const auto sp = param_settings(store_at_width(64).all(), inputs_at("sp", 64));
  const auto mu = param_settings(store_at_width(64).all(), inputs_at("mup", 64));
  for (size_t i = 0; i < sp.size(); ++i) {
    EXPECT_DOUBLE_EQ(sp[i].init_std, mu[i].init_std) << i;
    EXPECT_DOUBLE_EQ(sp[i].lr_multiplier, mu[i].lr_multiplier) << i;
    EXPECT_DOUBLE_EQ(sp[i].weight_decay, mu[i].weight_decay) << i;
    EXPECT_DOUBLE_EQ(sp[i].eps, mu[i].eps) << i;
  }
}

TEST(Parametrization, WidthAwareWeightDecayRules) {
  const auto store = store_at_width(256);  // m = 4
  RuleInputs in = inputs_at("mup", 256);
  in.mup.wd_rule = WdRule::WidthPower;
  in.mup.wd_width_exponent = 1;
  auto s = param_settings(store.all(), in);
  EXPECT_DOUBLE_EQ(s[1].weight_decay, 0.4);
  // e = 1 keeps eta x lambda of the hidden matrices at its base-width value (MuAdamW).
  EXPECT_DOUBLE_EQ(s[1].lr_multiplier * s[1].weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(s[0].weight_decay, 0.1);  // only hidden matrices follow the rule
  EXPECT_DOUBLE_EQ(s[4].weight_decay, 0.0);
  in.mup.wd_width_exponent = 0.5;
  EXPECT_DOUBLE_EQ(param_settings(store.all(), in)[1].weight_decay, 0.2);
  // timescale: tau = B / (eta_p lambda D) holds for each hidden matrix at its own lr.
  in.mup.wd_rule = WdRule::Timescale;
  in.mup.wd_timescale = 0.25;
  s = param_settings(store.all(), in);
  const double eta = 1e-2 * s[1].lr_multiplier;
  EXPECT_NEAR(1000.0 / (eta * s[1].weight_decay * 1000000.0), 0.25, 1e-12);
  EXPECT_DOUBLE_EQ(s[1].weight_decay, 1000.0 / (eta * 0.25 * 1e6));
}

TEST(Parametrization, DepthRulesOfCompleteP) {
  const auto store = store_at_width(64);
  models::ModelConfig c;
  c.d_model = 64, c.n_layers = 16, c.n_heads = 4;
  for (double alpha : {0.5, 1.0}) {
    MupConfig mup;
    mup.parametrization = Parametrization::Mup;
    mup.base_width = 64;
    mup.base_depth = 4;
    mup.depth_alpha = alpha;
    const RuleInputs in =
        rule_inputs(mup, OptimConfig{1e-2, 0.1, 0.9, 0.95, 1e-8, 1.0, 0}, c, 1, 1);
    EXPECT_DOUBLE_EQ(in.depth_multiplier, 4.0);  // 16 / 4
    const auto s = param_settings(store.all(), in);
    // alpha = 0.5: lr and eps x m_L^-1/2; alpha = 1: lr unchanged, eps x m_L^-1.
    EXPECT_DOUBLE_EQ(s[1].lr_multiplier, alpha == 0.5 ? 0.5 : 1.0);
    EXPECT_DOUBLE_EQ(s[1].eps, alpha == 0.5 ? 0.5e-8 : 0.25e-8);
    EXPECT_DOUBLE_EQ(s[0].lr_multiplier, 1.0);  // only hidden matrices
    EXPECT_DOUBLE_EQ(s[0].eps, 1e-8);
    const models::ScaleFactors f = scale_factors(mup, c);
    EXPECT_DOUBLE_EQ(f.residual_branch, alpha == 0.5 ? 0.5 : 0.25);
    EXPECT_EQ(f.residual_init_depth, 4);
  }
}

TEST(Parametrization, ForwardFactors) {
  models::ModelConfig c;
  c.d_model = 256, c.n_layers = 4, c.n_heads = 4;  // head_dim 64
  MupConfig mup;
  mup.base_width = 64;
  models::ScaleFactors sp = scale_factors(mup, c);
  EXPECT_EQ(sp.attention_scale, 0.0);  // the kernel's own 1/sqrt(head_dim)
  EXPECT_EQ(sp.logits, 1.0);
  EXPECT_EQ(sp.residual_branch, 1.0);
  mup.parametrization = Parametrization::Mup;
  mup.output_multiplier = 2;
  mup.attention_multiplier = 3;
  const models::ScaleFactors mu = scale_factors(mup, c);
  EXPECT_DOUBLE_EQ(mu.attention_scale, 3.0 / 64);
  EXPECT_DOUBLE_EQ(mu.logits, 2.0 / 4);
  mup.parametrization = Parametrization::Sp;
  EXPECT_DOUBLE_EQ(scale_factors(mup, c).attention_scale, 3.0 / 8);
  EXPECT_DOUBLE_EQ(scale_factors(mup, c).logits, 2.0);
}

TEST(Parametrization, RulesTableNamesBaseShapes) {
  const auto store = store_at_width(256);
  const auto in = inputs_at("mup", 256);
  const std::string table = rules_table(store.all(), param_settings(store.all(), in), 4);
  EXPECT_NE(table.find("h\thidden\t[512, 256]\t[128, 64]\t0.0625\t0.25\t0.1\t2.5e-09\n"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("e\tembedding\t[50, 256]\t[50, 64]\t1.0\t1.0\t0.1\t1e-08\n"),
            std::string::npos)
      << table;
}

TEST(AdamW, UsesEachParametersEps) {
  // With zero gradients after one step the update is m / (sqrt(v) + eps): a per-parameter eps
  // shows directly. One step of gradient g: m_hat = g, v_hat = g^2 -> update g / (|g| + eps).
  models::ParamStore store;
  store.add("a", Role::Hidden, InitKind::Zeros, {1}, {}, 1);
  store.add("b", Role::Hidden, InitKind::Zeros, {1}, {}, 1);
  OptimConfig config{1.0, 0.0, 0.9, 0.95, 1.0, 1.0, 0};
  std::vector<ParamSettings> settings(2);
  settings[0].eps = 1.0;
  settings[1].eps = 3.0;
  initialize(store, settings, 0);
  AdamW adam(store, config, settings);
  for (auto& p : store.all())
    p.value.mutable_grad() = torch::ones({1});
  adam.step(1.0);
  EXPECT_NEAR(store.get("a").value.item<double>(), -1.0 / 2.0, 1e-6);
  EXPECT_NEAR(store.get("b").value.item<double>(), -1.0 / 4.0, 1e-6);
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
    initialize(*store, param_settings(store->all(), {}), 7);
  }
  OptimConfig config{1e-2, 0.1, 0.9, 0.95, 1e-8, 1.0, 0};
  const auto settings = param_settings(whole_store.all(), RuleInputs{.optim = config});
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

// Three parameters with different multipliers, weight decays and eps (three groups of the fused
// kernel), the hidden one cut in two pieces as ZeRO-1 would; `seed` fills the gradients.
struct GuardedUpdates {
  models::ParamStore composite_store, fused_store;
  OptimConfig config{1e-2, 0.1, 0.9, 0.95, 1e-8, 1.0, 0};
  std::vector<ParamSettings> settings;
  std::vector<ParamSegment> segments{{0, 0, 7}, {0, 7, 8}, {1, 0, 4}, {2, 0, 6}};
  GuardedUpdates() {
    for (auto* store : {&composite_store, &fused_store}) {
      store->add("w", Role::Hidden, InitKind::Normal, {5, 3}, {0, 1}, 3);
      store->add("b", Role::Vector, InitKind::Ones, {4}, {0}, 1);
      store->add("e", Role::Embedding, InitKind::Normal, {3, 2}, {1}, 3);
      initialize(*store, param_settings(store->all(), {}), 7);
    }
    settings = param_settings(composite_store.all(), RuleInputs{.optim = config});
    settings[0].lr_multiplier = 0.5, settings[2].eps = 1e-6;
  }
  void gradients(uint64_t seed) {
    torch::manual_seed(seed);
    for (size_t i = 0; i < 3; ++i) {
      const torch::Tensor g = torch::randn(composite_store.all()[i].value.sizes());
      composite_store.all()[i].value.mutable_grad() = g.clone();
      fused_store.all()[i].value.mutable_grad() = g.clone();
    }
  }
  double max_difference() const {
    double d = 0;
    for (size_t i = 0; i < 3; ++i)
      d = std::max(
          d,
          (composite_store.all()[i].value - fused_store.all()[i].value).abs().max().item<double>());
    return d;
  }
};

TEST(AdamW, AtenFusedMatchesTheComposite) {
  GuardedUpdates u;
  const torch::Tensor w0 = u.fused_store.get("w").value.clone();
  AdamW composite(u.composite_store, u.config, u.settings, u.segments);
  AdamW fused(u.fused_store, u.config, u.settings, u.segments, AdamWKernels{.aten_fused = true});
  for (int step = 0; step < 5; ++step) {
    u.gradients(11 + step);
    composite.step(1e-2);
    fused.step(1e-2);
    EXPECT_LT(u.max_difference(), 1e-6) << "step " << step;
  }
  for (size_t k = 0; k < u.segments.size(); ++k) {
    EXPECT_TRUE(torch::allclose(composite.exp_avg(k), fused.exp_avg(k), 1e-5, 1e-7)) << k;
    EXPECT_TRUE(torch::allclose(composite.exp_avg_sq(k), fused.exp_avg_sq(k), 1e-5, 1e-9)) << k;
  }
  EXPECT_EQ(fused.steps_taken(), 5);
  EXPECT_GT((u.fused_store.get("w").value - w0).abs().min().item<double>(), 1e-4);  // it moved
  // A guard is the fused kernel's: the composite refuses it rather than ignore it.
  EXPECT_THROW(composite.step(1e-2, UpdateGuard{.clip_divisor = torch::ones({})}),
               std::logic_error);
}

TEST(AdamW, AGuardClipsAndSkipsTheUpdateOnTheDevice) {
  GuardedUpdates u;
  AdamW composite(u.composite_store, u.config, u.settings, u.segments);
  AdamW fused(u.fused_store, u.config, u.settings, u.segments, AdamWKernels{.aten_fused = true});
  for (int step = 0; step < 3; ++step) {
    u.gradients(21 + step);
    const double norm = std::sqrt(grad_square_sum(u.composite_store, u.segments));
    ASSERT_GT(norm, 1.0);  // clipped to 1 on both sides
    clip_grads(u.composite_store, u.segments, norm, 1.0);
    composite.step(1e-2);
    const torch::Tensor device_norm =
        grad_square_sum_on_device(u.fused_store, u.segments, torch::kCPU).sqrt();
    fused.step(1e-2, UpdateGuard{clip_divisor(device_norm, 1.0),
                                 found_non_finite({device_norm, torch::tensor(2.5)})});
    EXPECT_LT(u.max_difference(), 1e-6) << "step " << step;
  }
  // A non-finite loss: the update is skipped whole — parameters and moments as they were.
  u.gradients(31);
  std::vector<torch::Tensor> before, m_before;
  for (const auto& p : u.fused_store.all())
    before.push_back(p.value.clone());
  for (size_t k = 0; k < u.segments.size(); ++k)
    m_before.push_back(fused.exp_avg(k).clone());
  fused.step(1e-2, UpdateGuard{torch::ones({}), found_non_finite({torch::tensor(NAN)})});
  for (size_t i = 0; i < before.size(); ++i)
    EXPECT_TRUE(torch::equal(before[i], u.fused_store.all()[i].value)) << i;
  for (size_t k = 0; k < u.segments.size(); ++k)
    EXPECT_TRUE(torch::equal(m_before[k], fused.exp_avg(k))) << k;
}

TEST(Clipping, TheDivisorAndTheFiniteFlagAsTensors) {
  const auto divisor = [](double norm, double max_norm) {
    const torch::Tensor d = clip_divisor(torch::tensor(norm, torch::kFloat64), max_norm);
    EXPECT_EQ(d.scalar_type(), torch::kFloat32);
    EXPECT_EQ(d.dim(), 0);
    return d.item<double>();
  };
  EXPECT_EQ(divisor(0.5, 1.0), 1.0);  // under the limit: no clipping
  EXPECT_EQ(divisor(1.0, 1.0), 1.0);
  EXPECT_FLOAT_EQ(divisor(5.0, 1.0), static_cast<float>(5.000001));
  EXPECT_FLOAT_EQ(divisor(3.0, 0.5), static_cast<float>(3.000001 / 0.5));
  EXPECT_EQ(divisor(5.0, 0.0), 1.0);  // grad_clip 0: off
  // Dividing by it is clip_grads's scaling by max_norm / (norm + 1e-6), to fp32 rounding.
  EXPECT_NEAR(2.0 / divisor(5.0, 1.0), 2.0 * 1.0 / (5.0 + 1e-6), 1e-7);
  const auto flag = [](std::vector<torch::Tensor> v) { return found_non_finite(v).item<float>(); };
  EXPECT_EQ(flag({torch::tensor(1.0), torch::tensor(2.0f)}), 0.0f);
  EXPECT_EQ(flag({torch::tensor(1.0), torch::tensor(INFINITY)}), 1.0f);
  EXPECT_EQ(flag({torch::tensor(NAN, torch::kFloat64)}), 1.0f);
  EXPECT_EQ(flag({torch::tensor(-INFINITY), torch::tensor(NAN)}), 1.0f);
  EXPECT_THROW(found_non_finite({}), std::invalid_argument);
}

ScheduleConfig schedule(const std::string& kind, int64_t warmup) {
  ScheduleConfig s;
  s.kind = choice_value(kLrScheduleNames, kind), s.warmup = warmup, s.final_lr_fraction = 0.1;
  s.decay_fraction = 0.2, s.decay_shape = DecayShape::Linear;
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
  sqrt_shape.decay_shape = DecayShape::OneMinusSqrt;
  EXPECT_NEAR(lr_at(84, 100, 1.0, sqrt_shape), 0.1 + 0.9 * (1 - std::sqrt(5.0 / 20)), 1e-12);
}

}  // namespace
}  // namespace ladder::optim
