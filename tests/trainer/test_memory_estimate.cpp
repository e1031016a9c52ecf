// The memory estimate of a run (trainer/run/memory_estimate.h) against the model's own parameter
// count and the rules it states: fp32 parameters and gradients, two AdamW moments (sharded by
// ZeRO-1), activations over tp, micro-batches in flight by schedule.
#include <gtest/gtest.h>

#include "core/error.h"
#include "models/model.h"
#include "trainer/recipe/recipe.h"
#include "trainer/run/memory_estimate.h"

namespace ladder {
namespace {

Recipe recipe(const std::vector<std::string>& overrides, int world = 1) {
  return parse_recipe(
      "[run]\nname = \"m\"\n[data]\npath = \"d\"\nseq_len = 64\n[model]\nd_model = 128\n"
      "n_layers = 4\nn_heads = 4\n[schedule]\nwarmup = 2\n[train]\nsteps = 10\nglobal_batch = "
      "8\nmicro_batch = 2\n"
      "precision = \"fp32\"\n",
      "memory.toml", ".", {overrides, world, {}});
}

TEST(MemoryEstimate, OneProcessHoldsEveryParameterWithItsGradientAndMoments) {
  const Recipe r = recipe({});
  const int64_t vocab = 257;
  const MemoryEstimate e = estimate_memory(r, vocab);
  const double params =
      static_cast<double>(models::size_accounting(r.model, vocab, r.data.seq_len).total_params);
  EXPECT_DOUBLE_EQ(e.params, 4 * params);
  EXPECT_DOUBLE_EQ(e.grads, 4 * params);
  EXPECT_DOUBLE_EQ(e.optimizer, 8 * params);
  EXPECT_EQ(e.weight_copies, 0);
  EXPECT_EQ(e.microbatches_in_flight, 1);
  // Korthikanti et al.: s b h (34 + 5 a s / h) per layer (x2 in fp32) + the logits and their
  // gradient.
  const double s = 64, b = 2, h = 128, a = 4;
  EXPECT_DOUBLE_EQ(e.activations_per_microbatch,
                   4 * s * b * h * (34 + 5 * a * s / h) * 2 + 2 * 4 * s * b * vocab);
}

TEST(MemoryEstimate, ShardsFollowTheLayout) {
  const int64_t vocab = 257;
  const MemoryEstimate one = estimate_memory(recipe({}), vocab);
  // ZeRO-1 over 4 dp ranks: a quarter of the moments, the rest unchanged.
  const MemoryEstimate zero = estimate_memory(recipe({"optim.zero=1"}, 4), vocab);
  EXPECT_DOUBLE_EQ(zero.optimizer, one.optimizer / 4);
  EXPECT_DOUBLE_EQ(zero.params, one.params);
  // tp = 2: half of everything per rank.
  const MemoryEstimate tp = estimate_memory(recipe({"parallel.tp=2"}, 2), vocab);
  EXPECT_DOUBLE_EQ(tp.params, one.params / 2);
  EXPECT_DOUBLE_EQ(tp.activations_per_microbatch, one.activations_per_microbatch / 2);
  // pp = 2 with 4 micro-batches: fewer parameters on the busiest stage; 1F1B keeps 2 micro-batches
  // in flight, GPipe all 4.
  const MemoryEstimate pp = estimate_memory(recipe({"parallel.pp=2"}, 2), vocab);
  EXPECT_LT(pp.params, one.params);
  EXPECT_EQ(pp.microbatches_in_flight, 2);
  EXPECT_EQ(estimate_memory(recipe({"parallel.pp=2", "parallel.schedule=\"gpipe\""}, 2), vocab)
                .microbatches_in_flight,
            4);
  // bf16 on the CPU with the fused kernels: AdamW's bf16 weight copies, half the activations.
  const MemoryEstimate bf16 = estimate_memory(recipe({"train.precision=\"bf16\""}), vocab);
  EXPECT_DOUBLE_EQ(bf16.weight_copies, one.params / 2);
  EXPECT_LT(bf16.activations_per_microbatch, one.activations_per_microbatch);
}

TEST(MemoryEstimate, ARunThatCannotFitIsRefusedWithTheEstimate) {
  const MemoryEstimate e = estimate_memory(recipe({}), 257);
  EXPECT_NO_THROW(check_memory_fits(e, e.total() * 1.01));
  EXPECT_NO_THROW(check_memory_fits(e, 0));  // unknown: nothing refused
  try {
    check_memory_fits(e, e.total() / 2);
    FAIL() << "not refused";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("the run cannot fit"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("available per rank"), std::string::npos);
  }
}

}  // namespace
}  // namespace ladder
