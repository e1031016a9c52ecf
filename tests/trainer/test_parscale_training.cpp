// ParScale training with the `ladder` binary (fp32): two streams with prefixes under tensor, data
// and pipeline parallelism against one process (the streams ride the batch dimension, so every
// layout applies unchanged); what the trace records for the fitter; two-stage training with
// --init-from.
#include <gtest/gtest.h>

#include "core/hdf5.h"
#include "trainer/run/checkpoint.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

class ParscaleTraining : public TrainingFixture {};

const char* kParscale20 =
    "[parscale]\nstreams = 2\nprefix_tokens = 4\naggregation_smoothing = 0.1\n"
    "[train]\nsteps = 20\nglobal_batch = 8\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 10\nkeep = 2\n[eval]\nevery_steps = 10\ntokens = 512\n";
const char* kParscaleArch = "--set model.arch=parscale ";

constexpr double kTolerance = 1e-5;  // the bound: fp32 sums in another order, 20 steps

TEST_F(ParscaleTraining, LayoutsMatchOneProcess) {
  expect_layouts_match_one_process("ps_one", kParscale20, kParscaleArch,
                                   {{"ps_tp2", "--set parallel.tp=2", 2},
                                    {"ps_dp2", "", 2},
                                    {"ps_pp2", "--set parallel.pp=2", 2}},
                                   kTolerance);
  const std::string one = run_dir("ps_one") + "/trace.h5";
  h5::File f = h5::File::open(one, false);
  EXPECT_EQ(h5::get_string_attr(f, "/", "arch"), "parscale");
  EXPECT_EQ(h5::get_int_attr(f, "/", "P"), 2);
  EXPECT_EQ(h5::get_int_attr(f, "/", "prefix_tokens"), 4);
}

// Two-stage training (Chen et al. 2025): a dense first stage, then ParScale from its checkpoint.
TEST_F(ParscaleTraining, InitFromADenseCheckpointLoadsTheBackboneAndStartsTheNewParameters) {
  const char* k10 =
      "[train]\nsteps = 10\nglobal_batch = 8\nmicro_batch = 2\nlog_every = 1\n"
      "[checkpoint]\nevery_steps = 10\n[eval]\nevery_steps = 0\n";
  ASSERT_EQ(train(recipe("stage1", k10)).status, 0);
  const std::string checkpoint = checkpoint_path(run_dir("stage1"), 10);
  // One stream without a prefix is the dense model: from the same weights, the same losses.
  const auto dense = train(recipe("dense2", k10), "--init-from " + checkpoint);
  ASSERT_EQ(dense.status, 0) << dense.output;
  EXPECT_NE(dense.output.find("parameters loaded, 0 new"), std::string::npos) << dense.output;
  const auto p1 =
      train(recipe("p1", k10),
            "--set model.arch=parscale --set parscale.prefix_tokens=0 --init-from " + checkpoint);
  ASSERT_EQ(p1.status, 0) << p1.output;
  EXPECT_EQ(series(run_dir("p1") + "/trace.h5", "train/loss"),
            series(run_dir("dense2") + "/trace.h5", "train/loss"));
  // Two streams: the backbone loaded, the prefixes and the aggregation new.
  const auto p2 = train(recipe("p2", k10),
                        "--set model.arch=parscale --set parscale.streams=2 "
                        "--set parscale.prefix_tokens=4 --init-from " +
                            checkpoint);
  ASSERT_EQ(p2.status, 0) << p2.output;
  EXPECT_NE(p2.output.find("new: layers.0.attn.prefix_k, layers.0.attn.prefix_v, "
                           "layers.1.attn.prefix_k, layers.1.attn.prefix_v, aggregate.w_in, "
                           "aggregate.b_in, aggregate.w_out, aggregate.b_out"),
            std::string::npos)
      << p2.output;
  // The other way round is a mistake: the dense model has no aggregation or prefixes to take.
  const auto back = train(recipe("back", k10), "--init-from " + checkpoint_path(run_dir("p2"), 10));
  EXPECT_EQ(back.status, 2);
  EXPECT_NE(back.output.find("holds parameter aggregate.b_in, which the recipe's model "
                             "does not have"),
            std::string::npos)
      << back.output;
}

}  // namespace
}  // namespace ladder
