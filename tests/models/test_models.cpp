#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <functional>

#include "core/error.h"
#include "kernels/rms_norm.h"
#include "kernels/swiglu.h"
#include "models/blocks.h"
#include "models/dense.h"
#include "models/finite_differences.h"
#include "models/precision.h"
#include "optim/parametrization.h"

namespace ladder::models {
namespace {

TEST(Blocks, RmsNormGradients) {
  const auto x = leaf(torch::randn({2, 3, 8})), g = leaf(torch::rand({8}) + 0.5);
  expect_gradients_match([&] { return kernels::rms_norm_reference(x, g, 1e-5); }, {x, g});
}

TEST(Blocks, RmsNormNormalises) {
  const torch::Tensor x = torch::randn({4, 16}) * 5;
  const torch::Tensor y = kernels::rms_norm_reference(x, torch::ones({16}), 0.0);
  EXPECT_TRUE(torch::allclose(y.square().mean(-1), torch::ones({4}), 1e-5, 1e-5));
}

TEST(Blocks, RopeGradients) {
  RotaryEmbedding rope(8, 16, 10000.0);
  const auto x = leaf(torch::randn({2, 5, 3, 8}));
  expect_gradients_match([&] { return rope.apply(x); }, {x});
}

TEST(Blocks, RopeDependsOnlyOnRelativePosition) {
  // <rope(q) at m, rope(k) at n> is a function of m - n: shifting both positions leaves it
  // unchanged.
  RotaryEmbedding rope(16, 64, 10000.0);
  torch::manual_seed(1);
  const torch::Tensor q = torch::randn({16}), k = torch::randn({16});
  auto at_position = [&](const torch::Tensor& v, int64_t pos) {
    torch::Tensor x = torch::zeros({1, pos + 1, 1, 16}, torch::kFloat64);
    x[0][pos][0] = v.to(torch::kFloat64);
    return rope.apply(x)[0][pos][0];
  };
  const double base = at_position(q, 9).dot(at_position(k, 4)).item<double>();
  for (int64_t shift : {1, 7, 30}) {
    const double moved = at_position(q, 9 + shift).dot(at_position(k, 4 + shift)).item<double>();
    EXPECT_NEAR(moved, base, 1e-5) << "shift " << shift;
  }
  // And it does depend on the distance.
  EXPECT_GT(std::abs(at_position(q, 10).dot(at_position(k, 4)).item<double>() - base), 1e-3);
  // Position 0 is the identity.
  EXPECT_TRUE(torch::allclose(at_position(q, 0).to(torch::kFloat32), q, 1e-6, 1e-6));
}

TEST(Blocks, AttentionGradients) {
  const auto q = leaf(torch::randn({2, 4, 5, 8})), k = leaf(torch::randn({2, 2, 5, 8})),
             v = leaf(torch::randn({2, 2, 5, 8}));
  expect_gradients_match([&] { return causal_attention(q, k, v); }, {q, k, v});
}

TEST(Blocks, AttentionIsCausalAndMatchesReference) {
  torch::manual_seed(2);
  const torch::Tensor q = torch::randn({1, 2, 6, 4}), k = torch::randn({1, 2, 6, 4}),
                      v = torch::randn({1, 2, 6, 4});
  const torch::Tensor out = causal_attention(q, k, v);
  // Reference: explicit loop over query positions.
  for (int64_t t = 0; t < 6; ++t) {
    const torch::Tensor scores =
        torch::matmul(q.slice(2, t, t + 1), k.slice(2, 0, t + 1).transpose(-2, -1)) / 2.0;
    const torch::Tensor expected = torch::matmul(torch::softmax(scores, -1), v.slice(2, 0, t + 1));
    EXPECT_TRUE(torch::allclose(out.slice(2, t, t + 1), expected, 1e-5, 1e-6)) << t;
  }
  // Changing the future does not change the past.
  torch::Tensor v2 = v.clone();
  v2.slice(2, 4) += 1;
  EXPECT_TRUE(torch::allclose(causal_attention(q, k, v2).slice(2, 0, 4), out.slice(2, 0, 4)));
}

// The backend at::scaled_dot_product_attention takes is named (logged at a run's start): on the
// CPU its flash kernel serves causal fp32 and bf16 attention, with grouped-query sharing too.
TEST(Blocks, TheAttentionBackendIsNamed) {
  const torch::Tensor q = torch::empty({2, 4, 64, 32}), kv = torch::empty({2, 2, 64, 32});
  EXPECT_EQ(sdpa_backend(q, q, q), "flash attention");
  EXPECT_EQ(sdpa_backend(q.to(torch::kBFloat16), q.to(torch::kBFloat16), q.to(torch::kBFloat16)),
            "flash attention");
  EXPECT_EQ(sdpa_backend(q, kv, kv), "flash attention");
}

TEST(Blocks, AttentionScaleMultipliesTheScores) {
  torch::manual_seed(4);
  const torch::Tensor q = torch::randn({1, 2, 6, 8}), k = torch::randn({1, 2, 6, 8}),
                      v = torch::randn({1, 2, 6, 8});
  // 0 is the kernel's 1/sqrt(head_dim); muP's 1/head_dim equals the default on q / sqrt(8).
  EXPECT_TRUE(torch::allclose(causal_attention(q, k, v, 1.0 / std::sqrt(8.0)),
                              causal_attention(q, k, v), 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(causal_attention(q, k, v, 1.0 / 8),
                              causal_attention(q / std::sqrt(8.0), k, v), 1e-6, 1e-6));
}

TEST(Blocks, GroupedQueryAttentionEqualsRepeatedHeads) {
  torch::manual_seed(3);
  const torch::Tensor q = torch::randn({1, 4, 5, 8}), k = torch::randn({1, 2, 5, 8}),
                      v = torch::randn({1, 2, 5, 8});
  EXPECT_TRUE(
      torch::allclose(causal_attention(q, k, v),
                      causal_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))));
}

TEST(Blocks, SwigluGradients) {
  const auto a = leaf(torch::randn({3, 7})), b = leaf(torch::randn({3, 7}));
  expect_gradients_match([&] { return kernels::swiglu_reference(a, b); }, {a, b});
}

ModelConfig small_config(bool qk_norm, bool tied) {
  ModelConfig c;
  c.arch = Arch::Dense;
  c.d_model = 16, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.ffn_hidden = 24;
  c.norm_eps = 1e-5, c.rope_theta = 10000, c.qk_norm = qk_norm, c.tie_embeddings = tied;
  return c;
}

TEST(Dense, BlockGradientsIncludingEveryParameter) {
  for (bool qk_norm : {false, true}) {
    DenseTransformer model(small_config(qk_norm, false), 11, 8);
    optim::initialize(model.params(), optim::param_settings(model.params().all(), {}), 0);
    to_double(model.params());
    const torch::Tensor x = leaf(torch::randn({2, 5, 16}));
    std::vector<torch::Tensor> leaves = {x};
    for (auto& p : model.params().all())
      if (p.name.rfind("layers.1.", 0) == 0) leaves.push_back(p.value);
    EXPECT_EQ(leaves.size(), qk_norm ? 12u : 10u);
    expect_gradients_match([&] { return model.block(1, x); }, leaves);
  }
}

TEST(Dense, LossGradientsThroughTheWholeModel) {
  for (bool tied : {false, true}) {
    DenseTransformer model(small_config(true, tied), 11, 8);
    optim::initialize(model.params(), optim::param_settings(model.params().all(), {}), 0);
    to_double(model.params());
    const torch::Tensor tokens = torch::randint(0, 11, {2, 6});
    const torch::Tensor targets = torch::randint(0, 11, {2, 6});
    std::vector<torch::Tensor> leaves;
    for (auto& p : model.params().all())
      leaves.push_back(p.value);
    expect_gradients_match([&] { return model.loss(tokens, targets).loss.reshape({1}); }, leaves);
  }
}

// Gradients of every parameter after one forward/backward, flattened, and the loss.
std::pair<torch::Tensor, double> loss_and_gradients(DenseTransformer& model, const torch::Tensor& x,
                                                    const torch::Tensor& y, bool bf16) {
  for (auto& p : model.params().all())
    p.value.mutable_grad().reset();
  ModelOutput out;
  {
    const Autocast autocast(torch::kCPU, bf16);
    out = model.loss(x, y);
  }
  out.objective.backward();
  std::vector<torch::Tensor> grads;
  for (auto& p : model.params().all()) {
    EXPECT_TRUE(p.value.grad().defined()) << p.name;
    if (!p.value.grad().defined()) return {torch::Tensor(), 0};
    EXPECT_EQ(p.value.grad().scalar_type(), torch::kFloat32) << p.name << ": fp32 master gradient";
    grads.push_back(p.value.grad().reshape({-1}));
  }
  return {torch::cat(grads), out.loss.item<double>()};
}

TEST(Precision, Bf16AutocastComputesInBf16AndKeepsFp32GradientsAndLoss) {
  DenseTransformer model(small_config(true, false), 11, 8);
  optim::initialize(model.params(), optim::param_settings(model.params().all(), {}), 0);
  const torch::Tensor x = torch::randint(0, 11, {2, 8}), y = torch::randint(0, 11, {2, 8});
  {
    const Autocast autocast(torch::kCPU, true);
    EXPECT_EQ(model.logits(x).scalar_type(), torch::kBFloat16);  // the readout matmul ran in bf16
    EXPECT_EQ(model.loss(x, y).loss.scalar_type(), torch::kFloat32);  // the loss did not
  }
  EXPECT_FALSE(at::autocast::is_autocast_enabled(torch::kCPU)) << "the scope restores";
  EXPECT_EQ(model.logits(x).scalar_type(), torch::kFloat32);

  const auto [g32, loss32] = loss_and_gradients(model, x, y, false);
  const auto [g16, loss16] = loss_and_gradients(model, x, y, true);
  EXPECT_NEAR(loss16, loss32, 0.01 * loss32);
  const double cosine = (g16 * g32).sum().item<double>() / (g16.norm() * g32.norm()).item<double>();
  EXPECT_GT(cosine, 0.99) << "bf16 gradients point where fp32 ones do";
  EXPECT_GT((g16 - g32).abs().max().item<double>(), 0.0) << "bf16 really ran";
}

TEST(Precision, CastsMadeWithoutGradientsDoNotLeakIntoTraining) {
  // An evaluation (no gradients) under autocast, then a training forward: the training forward must
  // not reuse the evaluation's bf16 weight copies, which have no path back to the fp32 weights.
  DenseTransformer model(small_config(false, false), 11, 8);
  optim::initialize(model.params(), optim::param_settings(model.params().all(), {}), 0);
  const torch::Tensor x = torch::randint(0, 11, {2, 8}), y = torch::randint(0, 11, {2, 8});
  {
    torch::NoGradGuard no_grad;
    const Autocast autocast(torch::kCPU, true);
    model.loss(x, y);
  }
  const WeightCastCache step;  // as the training step holds it, around two micro-batches
  const auto [first, loss1] = loss_and_gradients(model, x, y, true);
  const auto [second, loss2] = loss_and_gradients(model, x, y, true);
  EXPECT_GT(first.abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(first, second)) << "cached casts give the same gradients again";
  EXPECT_EQ(loss1, loss2);
}

// Two models with the same weights, the second built with `scales`.
std::pair<std::unique_ptr<DenseTransformer>, std::unique_ptr<DenseTransformer>> scaled_pair(
    ScaleFactors scales, int64_t layers = 2) {
  ModelConfig c = small_config(false, false);
  c.n_layers = layers;
  auto plain = std::make_unique<DenseTransformer>(c, 11, 8);
  c.scales = scales;
  auto scaled = std::make_unique<DenseTransformer>(c, 11, 8);
  optim::initialize(plain->params(), optim::param_settings(plain->params().all(), {}), 3);
  optim::initialize(scaled->params(), optim::param_settings(scaled->params().all(), {}), 3);
  return {std::move(plain), std::move(scaled)};
}

TEST(Dense, OutputMultiplierScalesTheLogits) {
  ScaleFactors scales;
  scales.logits = 0.25;
  auto [plain, scaled] = scaled_pair(scales);
  const torch::Tensor tokens = torch::randint(0, 11, {2, 6});
  EXPECT_TRUE(torch::allclose(scaled->logits(tokens), 0.25 * plain->logits(tokens), 1e-6, 1e-7));
}

TEST(Dense, AttentionScaleReachesTheAttention) {
  ScaleFactors scales;
  scales.attention_scale = 1.0 / 4;  // head_dim 4: the default 1/2, here 1/4
  auto [plain, scaled] = scaled_pair(scales);
  const torch::Tensor tokens = torch::randint(0, 11, {2, 6});
  EXPECT_FALSE(torch::allclose(scaled->logits(tokens), plain->logits(tokens), 1e-4, 1e-5));
  scales.attention_scale = 1.0 / 2;  // the default, explicitly
  auto [plain2, same] = scaled_pair(scales);
  EXPECT_TRUE(torch::allclose(same->logits(tokens), plain2->logits(tokens), 1e-5, 1e-6));
}

TEST(Dense, ResidualBranchMultiplierAndProbe) {
  // One layer: the attention branch reads only the block's input, so the probe's mean |attention|
  // scales exactly by the branch multiplier; the embedding is untouched.
  ScaleFactors scales;
  scales.residual_branch = 0.5;
  auto [plain, scaled] = scaled_pair(scales, /*layers=*/1);
  const torch::Tensor tokens = torch::randint(0, 11, {2, 6});
  CoordinateProbe a, b;
  plain->set_probe(&a);
  scaled->set_probe(&b);
  plain->logits(tokens);
  scaled->logits(tokens);
  const auto ma = a.means(), mb = b.means();
  for (const char* type : {"embedding", "attention", "mlp", "residual", "logits"}) {
    ASSERT_TRUE(ma.count(type)) << type;
    EXPECT_GT(ma.at(type), 0) << type;
  }
  EXPECT_NEAR(mb.at("attention"), 0.5 * ma.at("attention"), 1e-6);
  EXPECT_DOUBLE_EQ(mb.at("embedding"), ma.at("embedding"));
  // The probe's value is the mean absolute value of the output.
  CoordinateProbe c;
  c.record("x", torch::tensor({1.0, -3.0}));
  c.record("x", torch::tensor({2.0}));
  EXPECT_DOUBLE_EQ(c.means().at("x"), (2.0 + 2.0) / 2);
  // Residual outputs start at std / sqrt(2 x residual_init_depth) rather than n_layers.
  ModelConfig deep = small_config(false, false);
  deep.n_layers = 8;
  deep.scales.residual_init_depth = 2;
  DenseTransformer m(deep, 11, 8);
  const auto settings = optim::param_settings(m.params().all(), {});
  for (size_t i = 0; i < settings.size(); ++i)
    if (m.params().all()[i].name == "layers.5.attn.wo")
      EXPECT_DOUBLE_EQ(settings[i].init_std, 1 / std::sqrt(16.0) / std::sqrt(4.0));
}

TEST(Dense, AccountingMatchesTheFormula) {
  ModelConfig c = small_config(false, false);
  DenseTransformer model(c, 11, 8);
  const SizeAccounting a = model.accounting(8);
  const int64_t d = 16, f = 24, kv = 2 * 4, L = 2, V = 11;
  const int64_t per_layer = d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d;
  EXPECT_EQ(a.total_params, V * d + L * per_layer + d + V * d);
  EXPECT_EQ(a.embedding_params, V * d);
  EXPECT_EQ(a.non_embedding_params, a.total_params - V * d);
  EXPECT_DOUBLE_EQ(a.flops_per_token, 6.0 * a.non_embedding_params + 12.0 * L * d * 8);
  // Tied: no readout parameters, but the readout matmul still costs 2 d V per token forward.
  DenseTransformer tied(small_config(false, true), 11, 8);
  const SizeAccounting t = tied.accounting(8);
  EXPECT_EQ(t.total_params, a.total_params - V * d);
  EXPECT_DOUBLE_EQ(t.flops_per_token, a.flops_per_token);
}

TEST(Dense, InitialisationIsKeyedByNameAndSeed) {
  DenseTransformer a(small_config(false, false), 11, 8), b(small_config(true, false), 11, 8);
  optim::initialize(a.params(), optim::param_settings(a.params().all(), {}), 5);
  optim::initialize(b.params(), optim::param_settings(b.params().all(), {}), 5);
  // b has extra (QK-norm) parameters, yet every shared name starts identical.
  for (const auto& p : a.params().all())
    EXPECT_TRUE(torch::equal(p.value, b.params().get(p.name).value)) << p.name;
  DenseTransformer c(small_config(false, false), 11, 8);
  optim::initialize(c.params(), optim::param_settings(c.params().all(), {}), 6);
  EXPECT_FALSE(torch::equal(a.params().get("layers.0.attn.wq").value,
                            c.params().get("layers.0.attn.wq").value));
  // Fan-in scaling: hidden std ~ 1/sqrt(16); residual projections smaller by 1/sqrt(2L).
  EXPECT_NEAR(a.params().get("layers.0.mlp.w_gate").value.std().item<double>(), 0.25, 0.03);
  EXPECT_NEAR(a.params().get("layers.0.attn.wo").value.std().item<double>(), 0.125, 0.02);
  EXPECT_TRUE(torch::equal(a.params().get("final_norm").value, torch::ones({16})));
}

TEST(Params, ShardedParametersStartAsBlocksOfTheSingleProcessWeights) {
  // Contract 3: whatever the split, the blocks of a parameter are the single process's tensor.
  auto build = [](Shard shard) {
    ParamStore store;
    store.add("layers.0.attn.wq", Role::Hidden, InitKind::Normal, {8, 6}, {0, 1}, 6, 1.0, shard);
    store.add("layers.0.attn.wo", Role::Hidden, InitKind::Normal, {6, 8}, {0, 1}, 8, 0.5,
              Shard{shard.dim < 0 ? -1 : 1, shard.rank, shard.size});
    store.add("final_norm", Role::Vector, InitKind::Ones, {6}, {0}, 1);
    optim::initialize(store, optim::param_settings(store.all(), {}), 11);
    return store;
  };
  const ParamStore whole = build({});
  for (int ranks : {2, 4}) {
    std::vector<torch::Tensor> rows, columns;
    for (int r = 0; r < ranks; ++r) {
      const ParamStore part = build(Shard{0, r, ranks});
      EXPECT_EQ(part.get("layers.0.attn.wq").value.sizes(), (std::vector<int64_t>{8 / ranks, 6}));
      EXPECT_EQ(part.numel(), whole.numel()) << "sizes count the logical tensors";
      rows.push_back(part.get("layers.0.attn.wq").value.detach());
      columns.push_back(part.get("layers.0.attn.wo").value.detach());
      EXPECT_TRUE(torch::equal(part.get("final_norm").value, whole.get("final_norm").value));
    }
    EXPECT_TRUE(torch::equal(torch::cat(rows, 0), whole.get("layers.0.attn.wq").value));
    EXPECT_TRUE(torch::equal(torch::cat(columns, 1), whole.get("layers.0.attn.wo").value));
  }
  ParamStore bad;
  EXPECT_THROW(bad.add("w", Role::Hidden, InitKind::Normal, {6, 4}, {0, 1}, 4, 1.0, Shard{0, 0, 4}),
               std::logic_error);
}

// model.arch is an enum after the recipe is read (unknown names are refused there, with the
// choices): every name it has builds a model.
TEST(Registry, EveryNamedArchitectureBuilds) {
  for (const auto& arch : kArchNames) {
    ModelConfig c = small_config(false, false);
    c.arch = arch.value;
    EXPECT_NE(build_model(c, 11, 8), nullptr) << arch.name;
  }
}

}  // namespace
}  // namespace ladder::models
