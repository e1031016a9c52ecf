// The run's cadence (trainer/run/cadence.h): when a run logs, evaluates, records spectra and writes
// and keeps checkpoints.
#include <gtest/gtest.h>

#include "trainer/recipe/recipe.h"
#include "trainer/run/cadence.h"

namespace ladder {
namespace {

Recipe recipe(const std::string& extra) {
  return parse_recipe(
      "[run]\nname = \"c\"\n[data]\npath = \"d\"\nseq_len = 16\n[model]\nd_model = 32\n"
      "n_layers = 2\nn_heads = 2\n[schedule]\nwarmup = 2\n[train]\nsteps = 100\nglobal_batch = "
      "4\nmicro_batch = 4\n" +
          extra,
      "cadence.toml", ".");
}

TEST(Cadence, LogEvalSpectraOnTheirPeriodsAndAtTheEnd) {
  const Cadence c(recipe("log_every = 30\n[eval]\nevery_steps = 40\nspectra_every_steps = 0\n"));
  EXPECT_FALSE(c.log(29));
  EXPECT_TRUE(c.log(30));
  EXPECT_TRUE(c.log(100));  // the last step always
  EXPECT_TRUE(c.eval(40));
  EXPECT_FALSE(c.eval(30));
  EXPECT_TRUE(c.eval(100));
  EXPECT_FALSE(c.spectra(100));  // off
}

TEST(Cadence, IntermediateCheckpointsByPowersOfTwoStepsOrTokens) {
  const Cadence log2(recipe("[checkpoint]\nevery_steps = 0\nintermediate = \"log2\"\n"));
  for (int64_t s : {1, 2, 4, 64})
    EXPECT_TRUE(log2.intermediate(s)) << s;
  for (int64_t s : {3, 6, 63, 100})
    EXPECT_FALSE(log2.intermediate(s)) << s;
  EXPECT_TRUE(log2.checkpoint(100, false));  // the last step
  EXPECT_TRUE(log2.checkpoint(7, true));     // a preemption signal
  EXPECT_FALSE(log2.checkpoint(7, false));
  // 4 x 16 = 64 tokens per step: 100 tokens are first covered by step 2, 640 by step 10.
  const Cadence tokens(
      recipe("[checkpoint]\nevery_steps = 25\nintermediate = [100, 640]\nintermediate_unit = "
             "\"tokens\"\n"));
  EXPECT_TRUE(tokens.intermediate(2));
  EXPECT_FALSE(tokens.intermediate(1));
  EXPECT_TRUE(tokens.intermediate(10));
  EXPECT_FALSE(tokens.intermediate(11));
  EXPECT_TRUE(tokens.checkpoint(25, false));  // periodic
  EXPECT_FALSE(tokens.intermediate(25));
}

}  // namespace
}  // namespace ladder
