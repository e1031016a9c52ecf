// Hybrid state-space training with the `ladder` binary (fp32): the pattern MMMA (three Mamba-2
// layers and an attention block) under tensor parallelism (with and without sequence parallelism),
// data parallelism and a pipeline cut in the middle of the pattern, against one process; a tp = 2
// checkpoint resumed in one process; what the trace records.
#include <gtest/gtest.h>

#include "core/hdf5.h"
#include "trainer/run/checkpoint.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

class HybridTraining : public TrainingFixture {};

// d_model 32, expand 2: 64 inner channels in 4 heads of 16 (tp 2 takes 2 each); chunks of 8 over
// sequences of 32; global batch 8 in micro-batches of 2.
const char* kHybrid20 =
    "[hybrid]\npattern = \"MMMA\"\nssm_state = 8\nssm_head_dim = 16\nconv_kernel = 4\nchunk = 8\n"
    "expand = 2\n"
    "[train]\nsteps = 20\nglobal_batch = 8\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 10\nkeep = 2\n[eval]\nevery_steps = 10\ntokens = 512\n";
const char* kHybridArch = "--set model.arch=hybrid --set model.n_layers=4 ";

constexpr double kTolerance = 1e-5;  // the bound: fp32 sums in another order, 20 steps

TEST_F(HybridTraining, LayoutsMatchOneProcess) {
  expect_layouts_match_one_process(
      "hy_one", kHybrid20, kHybridArch,
      {{"hy_tp2", "--set parallel.tp=2", 2},
       {"hy_tp2_sp", "--set parallel.tp=2 --set parallel.sequence_parallel=true", 2},
       {"hy_dp2", "", 2},
       // Two stages of two layers: MM | MA, the pattern cut in its middle.
       {"hy_pp2", "--set parallel.pp=2 --set parallel.stage_layers=[2,2]", 2}},
      kTolerance);
}

// The recipe defaults of [hybrid] (ssm_state 64, ssm_head_dim 64, chunk 64) on sequences of 256:
// d_model 64 has 128 inner channels in 2 heads of 64 (tp 2 takes one each). With a gated norm per
// head these runs drifted apart (tp 2 against one process by 1.4e-4 in loss, the fused kernels
// against the composites by 4.8e-4 after 20 steps); over all of d_inner they agree as the dense
// model does.
TEST_F(HybridTraining, LayoutsAndKernelsMatchOneProcessAtTheDefaults) {
  const std::string defaults =
      "[hybrid]\npattern = \"MMMA\"\n"
      "[train]\nsteps = 20\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n"
      "[checkpoint]\nevery_steps = 10\nkeep = 2\n[eval]\nevery_steps = 10\ntokens = 1024\n";
  const std::string flags = std::string(kHybridArch) +
                            "--set model.d_model=64 --set data.seq_len=256 --set optim.lr=3e-3";
  expect_layouts_match_one_process(
      "hyd_one", defaults, flags,
      {{"hyd_tp2", "--set parallel.tp=2", 2},
       {"hyd_pp2", "--set parallel.pp=2 --set parallel.stage_layers=[2,2]", 2},
       {"hyd_composite", "--set train.fused_kernels=false", 0}},
      kTolerance);
}

TEST_F(HybridTraining, TensorParallelCheckpointResumesInOneProcessAndTraceRecordsThePattern) {
  ASSERT_EQ(train(recipe("hy_ref", kHybrid20), kHybridArch).status, 0);
  const auto one = series(run_dir("hy_ref") + "/trace.h5", "train/loss");
  ASSERT_EQ(
      train(recipe("hy_tp2_ck", kHybrid20), kHybridArch + std::string("--set parallel.tp=2"), 2)
          .status,
      0);
  const auto r =
      train(recipe("hy_resumed", kHybrid20),
            kHybridArch + std::string("--resume ") + checkpoint_path(run_dir("hy_tp2_ck"), 10));
  ASSERT_EQ(r.status, 0) << r.output;
  expect_series_close(series(run_dir("hy_resumed") + "/trace.h5", "train/loss"), one, 10,
                      "tp2 -> one", kTolerance);
  h5::File f = h5::File::open(run_dir("hy_ref") + "/trace.h5", false);
  EXPECT_EQ(h5::get_string_attr(f, "/", "arch"), "hybrid");
  EXPECT_EQ(h5::get_string_attr(f, "/", "pattern"), "MMMA");
  EXPECT_EQ(h5::get_int_attr(f, "/", "ssm_state"), 8);
  EXPECT_EQ(h5::get_int_attr(f, "/", "ssm_head_dim"), 16);
  EXPECT_EQ(h5::get_int_attr(f, "/", "ssm_chunk"), 8);
}

}  // namespace
}  // namespace ladder
