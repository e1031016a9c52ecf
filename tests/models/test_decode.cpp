// Incremental decoding (models/model.h DecodeCache, used by `ladder sample`): a prompt, then one
// token at a time through the cache, gives the logits of one forward over the whole sequence, for
// every architecture: attention through its keys and values (grouped-query, QK-norm, a sliding
// window, ParScale's per-stream prefixes) and Mamba-2 layers through their convolution window and
// SSM state.
#include <gtest/gtest.h>

#include "core/error.h"
#include "models/dense.h"
#include "optim/parametrization.h"

namespace ladder::models {
namespace {

ModelConfig base(const std::string& arch) {
  ModelConfig c;
  c.arch = choice_value(kArchNames, arch), c.d_model = 32, c.n_layers = 2, c.n_heads = 4,
  c.n_kv_heads = 2;
  c.ffn_hidden = 48, c.norm_eps = 1e-5, c.rope_theta = 10000, c.qk_norm = true;
  return c;
}

// Logits of the whole sequence at once, and through the cache: the first `prompt` tokens
// together, then one by one.
void expect_cached_decoding_matches(const ModelConfig& config, const std::string& what) {
  const int64_t vocab = 29, seq = 14, prompt = 5;
  DenseTransformer model(config, vocab, seq);
  optim::initialize(model.params(), optim::param_settings(model.params().all(), {}), 5);
  torch::manual_seed(2);
  const torch::Tensor tokens = torch::randint(0, vocab, {2, seq});
  torch::Tensor whole;
  {
    torch::NoGradGuard no_grad;
    whole = model.logits(tokens);
  }
  DecodeCache cache;
  std::vector<torch::Tensor> pieces = {model.decode(tokens.slice(1, 0, prompt), cache)};
  for (int64_t t = prompt; t < seq; ++t)
    pieces.push_back(model.decode(tokens.slice(1, t, t + 1), cache));
  EXPECT_EQ(cache.length, seq) << what;
  const torch::Tensor cached = torch::cat(pieces, 1);
  ASSERT_EQ(cached.sizes(), whole.sizes()) << what;
  const double error = (cached - whole).abs().max().item<double>();
  EXPECT_LT(error, 1e-4 * std::max(1.0, whole.abs().max().item<double>())) << what;
  // The cache carries the context: the last token alone, without it, predicts otherwise.
  DecodeCache empty;
  const torch::Tensor alone = model.decode(tokens.slice(1, seq - 1, seq), empty);
  EXPECT_GT((alone - whole.slice(1, seq - 1, seq)).abs().max().item<double>(), 1e-3) << what;
  // Past the length the model was built for: a clear error, not a wrong answer.
  EXPECT_THROW(model.decode(tokens.slice(1, 0, 1), cache), Error) << what;
}

TEST(Decode, DenseWithGroupedQueriesAndQkNorm) {
  expect_cached_decoding_matches(base("dense"), "dense");
}

TEST(Decode, MixtureOfExperts) {
  ModelConfig c = base("moe");
  c.moe.experts = 4, c.moe.top_k = 2, c.moe.expert_ffn = 16, c.moe.moe_every = 1;
  c.moe.shared_experts = 1, c.moe.gate = Gate::Softmax, c.moe.balance = Balance::Aux;
  expect_cached_decoding_matches(c, "moe");
}

TEST(Decode, HybridMambaStateAndSlidingWindow) {
  ModelConfig c = base("hybrid");
  c.n_layers = 4;
  c.hybrid.pattern = "MMA", c.hybrid.ssm_state = 8, c.hybrid.ssm_head_dim = 8;
  c.hybrid.conv_kernel = 4, c.hybrid.chunk = 4, c.hybrid.expand = 2, c.hybrid.window = 6;
  expect_cached_decoding_matches(c, "hybrid");
}

TEST(Decode, ParscaleStreamsAndPrefixes) {
  ModelConfig c = base("parscale");
  c.parscale.streams = 3, c.parscale.prefix_tokens = 4, c.parscale.aggregation_smoothing = 0.1;
  expect_cached_decoding_matches(c, "parscale");
}

}  // namespace
}  // namespace ladder::models
