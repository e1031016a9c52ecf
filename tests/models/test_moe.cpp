// The routed MLP (models/moe.h) against a plain loop over every token and every expert, forward
// and backward; the grouped products; the auxiliary losses' path into the backward pass; the
// auxiliary-loss-free bias rule; the MoE model with one expert against the dense model; the size
// accounting.
#include <gtest/gtest.h>

#include "models/dense.h"
#include "models/moe.h"
#include "optim/parametrization.h"

namespace ladder::models {
namespace {

MoeConfig moe_config(int64_t experts, int64_t top_k, int64_t expert_ffn) {
  MoeConfig c;
  c.experts = experts, c.top_k = top_k, c.expert_ffn = expert_ffn, c.moe_every = 1;
  c.gate = Gate::Softmax, c.balance = Balance::Aux, c.bias_update_rate = 0.01;
  return c;
}

// One routed layer with its own store, initialised as training would.
struct Layer {
  Layer(const MoeConfig& c, int64_t d, uint64_t seed = 3) {
    moe = std::make_unique<RoutedExperts>(c, d, parallel::TensorParallel{},
                                          parallel::ExpertParallel{}, store, "moe.", 1.0,
                                          Holding::Held);
    optim::initialize(store, optim::param_settings(store.all(), {}), seed);
  }
  torch::Tensor value(const std::string& name) const { return store.get("moe." + name).value; }
  ParamStore store;
  std::unique_ptr<RoutedExperts> moe;
};

// Every token through every expert, weighted by its routing weight (zero for experts not chosen
// and for assignments beyond an expert's capacity, counted in token order).
torch::Tensor reference_moe(const Layer& layer, const MoeConfig& c, const torch::Tensor& x) {
  const torch::Tensor router = layer.value("router"), gate = layer.value("experts.w_gate"),
                      up = layer.value("experts.w_up"), down = layer.value("experts.w_down");
  const int64_t tokens = x.size(0);
  const auto capacity = c.capacity_factor > 0
                            ? static_cast<int64_t>(std::ceil(c.capacity_factor *
                                                             static_cast<double>(tokens * c.top_k) /
                                                             static_cast<double>(c.experts)))
                            : tokens * c.top_k;
  std::vector<int64_t> used(c.experts, 0);
  std::vector<torch::Tensor> rows;
  for (int64_t t = 0; t < tokens; ++t) {
    const torch::Tensor logits = torch::mv(router, x[t]);
    const torch::Tensor scores = c.gate == Gate::Sigmoid ? logits.sigmoid() : logits.softmax(0);
    const torch::Tensor chosen = std::get<1>(scores.detach().sort(0, /*descending=*/true));
    torch::Tensor total = scores.index_select(0, chosen.narrow(0, 0, c.top_k)).sum();
    torch::Tensor out = torch::zeros_like(x[t]);
    for (int64_t e = 0; e < c.experts; ++e) {
      bool picked = false;
      for (int64_t j = 0; j < c.top_k; ++j)
        picked = picked || chosen[j].item<int64_t>() == e;
      if (!picked || used[e]++ >= capacity) continue;
      const torch::Tensor weight = c.top_k > 1 ? scores[e] / total : scores[e];
      const torch::Tensor hidden = torch::silu(torch::mv(gate[e], x[t])) * torch::mv(up[e], x[t]);
      out = out + weight * torch::mv(down[e], hidden);
    }
    if (c.shared_experts > 0) {
      const torch::Tensor h = torch::silu(torch::mv(layer.value("shared.w_gate"), x[t])) *
                              torch::mv(layer.value("shared.w_up"), x[t]);
      out = out + torch::mv(layer.value("shared.w_down"), h);
    }
    rows.push_back(out);
  }
  return torch::stack(rows);
}

// The layer against the loop: outputs, and the gradients of the input and of every parameter
// under a fixed random weighting of the outputs.
void expect_layer_matches_reference(const MoeConfig& c, int64_t d, const std::string& what) {
  Layer layer(c, d);
  torch::manual_seed(5);
  const torch::Tensor x0 = torch::randn({13, d});
  const torch::Tensor weights = torch::randn({13, d});
  const torch::Tensor x = x0.clone().requires_grad_(true);
  const torch::Tensor y = layer.moe->forward(x);
  (y * weights).sum().backward();
  const torch::Tensor xr = x0.clone().requires_grad_(true);
  std::vector<torch::Tensor> fast_grads;
  for (auto& p : layer.store.all()) {
    fast_grads.push_back(p.value.grad().clone());
    p.value.mutable_grad().zero_();
  }
  const torch::Tensor yr = reference_moe(layer, c, xr);
  (yr * weights).sum().backward();
  EXPECT_TRUE(torch::allclose(y, yr, 1e-5, 1e-6))
      << what << ": outputs differ by " << (y - yr).abs().max().item<double>();
  EXPECT_TRUE(torch::allclose(x.grad(), xr.grad(), 1e-5, 1e-6)) << what << ": input gradients";
  for (size_t i = 0; i < fast_grads.size(); ++i) {
    const auto& p = layer.store.all()[i];
    EXPECT_TRUE(torch::allclose(fast_grads[i], p.value.grad(), 1e-5, 1e-6))
        << what << ": gradient of " << p.name << " differs by "
        << (fast_grads[i] - p.value.grad()).abs().max().item<double>();
  }
}

TEST(RoutedExperts, MatchesAReferenceLoopForwardAndBackward) {
  expect_layer_matches_reference(moe_config(8, 2, 8), 8, "softmax top-2");
  expect_layer_matches_reference(moe_config(4, 1, 8), 8, "softmax top-1 (raw weight)");
  MoeConfig sigmoid = moe_config(8, 3, 8);
  sigmoid.gate = Gate::Sigmoid, sigmoid.shared_experts = 1;
  expect_layer_matches_reference(sigmoid, 8, "sigmoid top-3 with a shared expert");
  MoeConfig capacity = moe_config(4, 2, 8);
  capacity.capacity_factor = 0.5;  // 13 tokens x 2 / 4 x 0.5: 4 assignments per expert
  expect_layer_matches_reference(capacity, 8, "capacity factor 0.5");
  // Widths that are not a multiple of 16 bytes take the product-per-expert path.
  expect_layer_matches_reference(moe_config(5, 2, 6), 6, "unaligned sizes");
}

TEST(RoutedExperts, CountsDroppedAssignments) {
  MoeConfig c = moe_config(4, 2, 8);
  c.capacity_factor = 0.5;
  Layer layer(c, 8);
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({13, 8});
  layer.moe->forward(x);
  const torch::Tensor counts = layer.moe->take_counts();
  const torch::Tensor load = counts.narrow(0, 0, 4);
  EXPECT_EQ(load.sum().item<double>(), 26.0);
  const double kept = load.clamp_max(4).sum().item<double>();  // capacity ceil(0.5 x 26 / 4) = 4
  EXPECT_EQ(counts[4 + kDropped].item<double>(), 26.0 - kept);
  EXPECT_GT(counts[4 + kDropped].item<double>(), 0.0);
  EXPECT_EQ(counts[4 + kAssignments].item<double>(), 26.0);
  EXPECT_EQ(counts[4 + kForwards].item<double>(), 1.0);
  EXPECT_EQ(layer.moe->take_counts().sum().item<double>(), 0.0);  // taken: counting restarts
  {
    torch::NoGradGuard no_grad;  // evaluation is not counted
    layer.moe->forward(x);
  }
  EXPECT_EQ(layer.moe->take_counts().sum().item<double>(), 0.0);
}

TEST(RoutedExperts, GroupedLinearEqualsOneProductPerGroup) {
  torch::manual_seed(2);
  for (const int64_t width : {8, 6}) {  // the grouped kernel, and the fallback
    const torch::Tensor w = torch::randn({4, width, width}, torch::requires_grad());
    const torch::Tensor x = torch::randn({9, width}, torch::requires_grad());
    const torch::Tensor ends = torch::tensor({3, 3, 9, 9}, torch::kInt64);  // two empty groups
    const torch::Tensor y = grouped_linear(x, w, ends);
    const torch::Tensor expected = torch::cat(
        {torch::matmul(x.narrow(0, 0, 3), w[0].t()), torch::matmul(x.narrow(0, 3, 6), w[2].t())});
    EXPECT_TRUE(torch::allclose(y, expected, 1e-6, 1e-6)) << width;
    const torch::Tensor g = torch::randn_like(y);
    const auto grads = torch::autograd::grad({y}, {x, w}, {g});
    const auto expected_grads = torch::autograd::grad({expected}, {x, w}, {g});
    EXPECT_TRUE(torch::allclose(grads[0], expected_grads[0], 1e-6, 1e-6)) << width;
    EXPECT_TRUE(torch::allclose(grads[1], expected_grads[1], 1e-6, 1e-6)) << width;
    EXPECT_EQ(grads[1][1].abs().sum().item<double>(), 0.0);  // an empty group gets no gradient
  }
}

// The balancing losses reach the router through the layer's output: their gradient is the
// weighted gradient of the losses themselves, times the objective scale.
TEST(RoutedExperts, AuxiliaryLossesEnterTheBackwardPassScaled) {
  MoeConfig c = moe_config(6, 2, 8);
  Layer plain(c, 8);
  c.aux_loss = 0.3, c.router_z_loss = 0.02;
  Layer with_losses(c, 8);
  with_losses.moe->set_objective_scale(0.25);
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({11, 8});
  const torch::Tensor weights = torch::randn({11, 8});
  (plain.moe->forward(x) * weights).sum().backward();
  (with_losses.moe->forward(x) * weights).sum().backward();
  const torch::Tensor router = plain.value("router").detach().requires_grad_(true);
  const torch::Tensor logits = torch::matmul(x, router.t());
  const Routing routing = route(logits, c);
  const torch::Tensor losses =
      0.3 * load_balancing_loss(routing, 6) + 0.02 * torch::logsumexp(logits, -1).square().mean();
  const torch::Tensor expected = torch::autograd::grad({losses * 0.25}, {router})[0];
  const torch::Tensor difference =
      with_losses.value("router").grad() - plain.value("router").grad();
  EXPECT_TRUE(torch::allclose(difference, expected, 1e-4, 1e-6))
      << (difference - expected).abs().max().item<double>();
  EXPECT_GT(expected.abs().max().item<double>(), 0.0);
  // The values are counted: one forward each.
  const torch::Tensor counts = with_losses.moe->take_counts();
  EXPECT_NEAR(counts[6 + kAuxLoss].item<double>(), load_balancing_loss(routing, 6).item<double>(),
              1e-6);
}

TEST(RoutedExperts, LoadBalancingLossIsOneWhenBalanced) {
  // Four tokens, each expert chosen once, uniform probabilities: E x sum_i (1/4)(1/4) = 1.
  Routing r;
  r.experts = torch::tensor({0, 1, 2, 3}, torch::kInt64).view({4, 1});
  r.probs = torch::full({4, 4}, 0.25);
  EXPECT_NEAR(load_balancing_loss(r, 4).item<double>(), 1.0, 1e-12);
  r.experts = torch::zeros({4, 1}, torch::kInt64);  // every token to expert 0
  r.probs = torch::zeros({4, 4}).index_fill_(1, torch::tensor({0}), 1.0);
  EXPECT_NEAR(load_balancing_loss(r, 4).item<double>(), 4.0, 1e-12);
}

// DeepSeek-V3's rule on a router that sends most tokens to two experts: the bias, and it alone,
// spreads the load.
TEST(RoutedExperts, BiasRuleEvensOutASkewedRouter) {
  MoeConfig c = moe_config(8, 2, 8);
  c.gate = Gate::Sigmoid, c.balance = Balance::Bias, c.bias_update_rate = 0.002;
  Layer layer(c, 8);
  EXPECT_FALSE(layer.value("router_bias").requires_grad());
  EXPECT_FALSE(layer.store.get("moe.router_bias").trained);
  torch::manual_seed(6);
  const torch::Tensor direction = torch::randn({8});
  {
    torch::NoGradGuard no_grad;
    layer.value("router").index_put_({0}, 0.3 * direction);
    layer.value("router").index_put_({1}, 0.2 * direction);
  }
  auto cv_of = [](const torch::Tensor& load) {
    return (load.std(0, false) / load.mean()).item<double>();
  };
  std::vector<double> cv;
  for (int step = 0; step < 300; ++step) {
    const torch::Tensor x = torch::randn({64, 8}) + direction;
    layer.moe->forward(x);
    const torch::Tensor load = layer.moe->take_counts().narrow(0, 0, 8);
    cv.push_back(cv_of(load));
    layer.moe->balance(load);
  }
  double late = 0;
  for (size_t i = cv.size() - 50; i < cv.size(); ++i)
    late += cv[i] / 50;
  EXPECT_GT(cv.front(), 1.0);
  EXPECT_LT(late, 0.25 * cv.front()) << "cv " << cv.front() << " -> " << late;
  // The router's weights were not touched: only the bias moved.
  EXPECT_GT(layer.value("router_bias").abs().max().item<double>(), 0.0);
}

TEST(RoutedExperts, SummaryOfCounts) {
  // Two layers of four experts: loads [2, 2, 2, 2] and [4, 2, 1, 1] (mean 2).
  const torch::Tensor counts =
      torch::tensor({{2., 2., 2., 2., 1., 8., 2.0, 10., 2.}, {4., 2., 1., 1., 0., 8., 1.0, 6., 2.}},
                    torch::kFloat64);
  const RoutingSummary s = summarize_routing(counts);
  EXPECT_NEAR(s.load_max_over_mean, (1.0 + 2.0) / 2, 1e-12);
  const double cv2 = std::sqrt((4.0 + 0 + 1 + 1) / 4) / 2;
  EXPECT_NEAR(s.load_cv, (0 + cv2) / 2, 1e-12);
  EXPECT_NEAR(s.dropped_fraction, 1.0 / 16, 1e-12);
  EXPECT_NEAR(s.aux_loss, 3.0 / 4, 1e-12);
  EXPECT_NEAR(s.z_loss, 16.0 / 4, 1e-12);
}

ModelConfig tiny_config(const std::string& arch) {
  ModelConfig c;
  c.arch = choice_value(kArchNames, arch), c.d_model = 16, c.n_layers = 2, c.n_heads = 2,
  c.n_kv_heads = 2;
  c.ffn_hidden = 32, c.norm_eps = 1e-5, c.rope_theta = 10000;
  return c;
}

// One expert, top-1: the routed layer is the dense MLP (weight 1, no balancing losses).
TEST(MoeModel, OneExpertTopOneEqualsTheDenseModel) {
  ModelConfig dense_config = tiny_config("dense"), moe = tiny_config("moe");
  moe.moe = moe_config(1, 1, 32);
  DenseTransformer dense(dense_config, 23, 16), routed(moe, 23, 16);
  optim::initialize(dense.params(), optim::param_settings(dense.params().all(), {}), 7);
  optim::initialize(routed.params(), optim::param_settings(routed.params().all(), {}), 9);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : routed.params().all()) {
      std::string name = p.name;
      if (const auto at = name.find("moe.experts."); at != std::string::npos)
        name.replace(at, 12, "mlp.");
      else if (name.find("moe.router") != std::string::npos)
        continue;
      p.value.copy_(dense.params().get(name).value.view_as(p.value));
    }
  }
  torch::manual_seed(3);
  const torch::Tensor tokens = torch::randint(0, 23, {2, 16});
  const torch::Tensor targets = torch::randint(0, 23, {2, 16});
  EXPECT_TRUE(torch::allclose(routed.logits(tokens), dense.logits(tokens), 1e-5, 1e-6));
  const ModelOutput a = routed.loss(tokens, targets), b = dense.loss(tokens, targets);
  EXPECT_NEAR(a.loss.item<double>(), b.loss.item<double>(), 1e-6);
  a.objective.backward();
  b.objective.backward();
  const torch::Tensor g_routed = routed.params().get("layers.1.moe.experts.w_down").value.grad();
  const torch::Tensor g_dense = dense.params().get("layers.1.mlp.w_down").value.grad();
  EXPECT_TRUE(torch::allclose(g_routed.view_as(g_dense), g_dense, 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(routed.params().get("layers.0.attn.wq").value.grad(),
                              dense.params().get("layers.0.attn.wq").value.grad(), 1e-5, 1e-7));
}

TEST(MoeModel, AccountingCountsActiveParameters) {
  ModelConfig c = tiny_config("moe");
  c.n_layers = 4;
  c.moe = moe_config(8, 2, 16);
  c.moe.shared_experts = 1, c.moe.moe_every = 2, c.moe.balance = Balance::Bias;
  const int64_t vocab = 23, seq = 16, d = 16;
  const SizeAccounting a = size_accounting(c, vocab, seq);
  const int64_t attention = 4 * d * d, norms = 2 * d;
  const int64_t dense_mlp = 3 * 32 * d;
  const int64_t expert = 3 * 16 * d, router = 8 * d, bias = 8;
  // Layers 1 and 3 routed (moe_every 2), layers 0 and 2 dense.
  const int64_t layers =
      4 * (attention + norms) + 2 * dense_mlp + 2 * (router + bias + 8 * expert + 1 * expert);
  EXPECT_EQ(a.embedding_params, vocab * d);
  EXPECT_EQ(a.total_params, layers + 2 * vocab * d + d);
  EXPECT_EQ(a.active_params, a.total_params - 2 * 6 * expert);  // 6 of 8 experts idle
  EXPECT_EQ(a.active_non_embedding_params, a.active_params - vocab * d);
  EXPECT_DOUBLE_EQ(a.flops_per_token,
                   6.0 * static_cast<double>(a.active_non_embedding_params) + 12.0 * 4 * d * seq);
  // A pipeline split by FLOPs sees the same active costs; by parameters every expert.
  const StageCosts flops = stage_costs(c, vocab, seq, parallel::StageBalance::Flops);
  EXPECT_DOUBLE_EQ(flops.layers[1] - flops.layers[0], 6.0 * (router + 3 * expert - dense_mlp));
  const StageCosts params = stage_costs(c, vocab, seq, parallel::StageBalance::Params);
  EXPECT_DOUBLE_EQ(params.layers[1] - params.layers[0],
                   static_cast<double>(router + bias + 9 * expert - dense_mlp));
}

}  // namespace
}  // namespace ladder::models
