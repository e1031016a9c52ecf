// ParScale (Chen et al. 2025) in the dense model: one stream without a prefix is the dense model
// bit for bit; the aggregation's weights sum to one and keep eps / P each; finite differences for
// the prefixes and the aggregation MLP; streams that differ only in their prefixes differ;
// accounting.
#include <gtest/gtest.h>

#include "models/dense.h"
#include "models/finite_differences.h"
#include "optim/parametrization.h"

namespace ladder::models {
namespace {

ModelConfig parscale_config(int64_t streams, int64_t prefix) {
  ModelConfig c;
  c.arch = Arch::Parscale;
  c.d_model = 16, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.ffn_hidden = 24;
  c.norm_eps = 1e-5, c.rope_theta = 10000;
  c.parscale.streams = streams, c.parscale.prefix_tokens = prefix;
  c.parscale.aggregation_smoothing = 0.1;
  return c;
}

void init(DenseTransformer& model, uint64_t seed) {
  optim::initialize(model.params(), optim::param_settings(model.params().all(), {}), seed);
}

TEST(ParScale, OneStreamWithoutPrefixIsTheDenseModel) {
  ModelConfig dense = parscale_config(1, 0);
  dense.arch = Arch::Dense;
  DenseTransformer a(parscale_config(1, 0), 19, 12), b(dense, 19, 12);
  ASSERT_EQ(a.params().all().size(), b.params().all().size());
  init(a, 3), init(b, 3);
  torch::manual_seed(1);
  const torch::Tensor tokens = torch::randint(0, 19, {2, 12}),
                      targets = torch::randint(0, 19, {2, 12});
  EXPECT_TRUE(torch::equal(a.logits(tokens), b.logits(tokens)));
  EXPECT_EQ(a.loss(tokens, targets).loss.item<double>(),
            b.loss(tokens, targets).loss.item<double>());
  EXPECT_EQ(a.accounting(12).flops_per_token, b.accounting(12).flops_per_token);
}

TEST(ParScale, AggregationWeightsSumToOneAndKeepTheSmoothingFloor) {
  DenseTransformer model(parscale_config(4, 3), 19, 12);
  init(model, 4);
  {
    torch::NoGradGuard no_grad;  // large scores, so that the softmax alone would starve streams
    model.params().get("aggregate.w_out").value.mul_(40);
  }
  torch::manual_seed(2);
  const auto [weights, combined] = model.aggregation(torch::randn({4, 9, 16}));
  ASSERT_EQ(weights.sizes(), (std::vector<int64_t>{9, 4}));
  EXPECT_TRUE(torch::allclose(weights.sum(1), torch::ones({9}), 1e-6, 1e-6));
  EXPECT_GE(weights.min().item<double>(), 0.1 / 4 - 1e-7);
  EXPECT_EQ(combined.sizes(), (std::vector<int64_t>{9, 16}));
}

TEST(ParScale, GradientsOfThePrefixesAndTheAggregation) {
  DenseTransformer model(parscale_config(2, 3), 19, 12);
  init(model, 5);
  to_double(model.params());
  torch::manual_seed(3);
  const torch::Tensor tokens = torch::randint(0, 19, {2, 5}),
                      targets = torch::randint(0, 19, {2, 5});
  std::vector<torch::Tensor> leaves;
  for (auto& p : model.params().all())
    if (p.name.find("prefix_") != std::string::npos || p.name.rfind("aggregate.", 0) == 0)
      leaves.push_back(p.value);
  EXPECT_EQ(leaves.size(), 2u * 2 + 4);  // two prefixes per layer, the MLP's two layers
  expect_gradients_match([&] { return model.loss(tokens, targets).loss.reshape({1}); }, leaves);
}

// Two streams with identical prefixes compute identical hidden states; different prefixes make
// them differ, and the outputs with them.
TEST(ParScale, StreamsThatDifferOnlyInTheirPrefixesDiffer) {
  DenseTransformer model(parscale_config(2, 3), 19, 12);
  init(model, 6);
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({2, 7, 16}).repeat({2, 1, 1});  // two streams of 2
  auto streams_differ = [&] {
    const torch::Tensor h = model.block(0, x);
    return !torch::allclose(h.narrow(0, 0, 2), h.narrow(0, 2, 2));
  };
  EXPECT_TRUE(streams_differ());
  const torch::Tensor tokens = torch::randint(0, 19, {2, 7});
  const torch::Tensor before = model.logits(tokens);
  {
    torch::NoGradGuard no_grad;
    for (const char* name : {"layers.0.attn.prefix_k", "layers.0.attn.prefix_v",
                             "layers.1.attn.prefix_k", "layers.1.attn.prefix_v"}) {
      torch::Tensor w = model.params().get(name).value;
      w[1].copy_(w[0]);
    }
  }
  EXPECT_FALSE(streams_differ());
  EXPECT_FALSE(torch::allclose(model.logits(tokens), before));
}

TEST(ParScale, AccountingRunsTheBackboneOncePerStream) {
  const int64_t vocab = 19, seq = 12, d = 16;
  const SizeAccounting one = size_accounting(parscale_config(1, 0), vocab, seq);
  const SizeAccounting four = size_accounting(parscale_config(4, 3), vocab, seq);
  const int64_t kv = 8, prefixes = 2 * 2 * 4 * 3 * kv, aggregator = d * 4 * d + d + 4 * d + 4;
  EXPECT_EQ(four.total_params, one.total_params + prefixes + aggregator);
  const double readout = 6.0 * vocab * d;
  const double backbone = one.flops_per_token - readout;  // 6 N_blocks + attention over 12
  const double attention_with_prefix = 2 * 12.0 * d * 3;  // two layers see 3 more keys
  EXPECT_DOUBLE_EQ(four.flops_per_token,
                   4 * (backbone + attention_with_prefix) + readout + 6.0 * aggregator);
}

}  // namespace
}  // namespace ladder::models
