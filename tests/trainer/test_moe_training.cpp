// Mixture-of-experts training with the `ladder` binary (fp32): dropless top-2 routing over 8
// experts under expert, tensor (with and without sequence parallelism), data and pipeline
// parallelism and their compositions against one process; the auxiliary-loss-free bias rule across
// data-parallel ranks; checkpoints that move from ep = 2 and from tp = 2 to one process; what the
// trace records.
#include <gtest/gtest.h>

#include "core/hdf5.h"
#include "trainer/run/checkpoint.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

class MoeTraining : public TrainingFixture {};

// 8 experts, top-2, each half the dense SwiGLU (expert_ffn 64 of ffn_hidden 128), every layer
// routed; global batch 8 in micro-batches of 2.
const char* kMoe20 =
    "[moe]\nexperts = 8\ntop_k = 2\ngranularity = 2.0\n"
    "[train]\nsteps = 20\nglobal_batch = 8\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 10\nkeep = 2\n[eval]\nevery_steps = 10\ntokens = 512\n";
const char* kMoeArch = "--set model.arch=moe ";

// Layouts sum partial products, and the routing weights' gradients, in another order than one
// process: fp32's last bits over 20 steps. The bound.
constexpr double kTolerance = 1e-5;

TEST_F(MoeTraining, LayoutsMatchOneProcess) {
  const auto one_run = train(recipe("moe_one", kMoe20), kMoeArch);
  ASSERT_EQ(one_run.status, 0) << one_run.output;
  const std::string one = run_dir("moe_one") + "/trace.h5";
  for (const Layout& l :
       {Layout{"moe_tp2", "--set parallel.tp=2", 2},
        Layout{"moe_tp2_sp", "--set parallel.tp=2 --set parallel.sequence_parallel=true", 2},
        Layout{"moe_dp2", "", 2}, Layout{"moe_pp2", "--set parallel.pp=2", 2},
        Layout{"moe_tp2_dp2_zero", "--set parallel.tp=2 --set optim.zero=1", 4},
        Layout{"moe_ep2", "--set parallel.ep=2", 2},
        Layout{"moe_ep2_tp2", "--set parallel.ep=2 --set parallel.tp=2", 4},
        Layout{"moe_ep2_pp2", "--set parallel.ep=2 --set parallel.pp=2", 4},
        // dp 4: two replicas of each expert half, their gradients (and ZeRO shards) over 2 ranks.
        Layout{"moe_ep2_dp4_zero", "--set parallel.ep=2 --set optim.zero=1", 4}}) {
    const auto r = train(recipe(l.name, kMoe20), kMoeArch + std::string(l.flags), l.ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    if (std::string(l.flags).find("ep=2") != std::string::npos) {
      EXPECT_NE(r.output.find("expert parallel: ep=2: 4 of 8 experts per rank"), std::string::npos)
          << l.name;
      for (const double bytes : series(run_dir(l.name) + "/trace.h5", "train/ep_comm_bytes"))
        EXPECT_GT(bytes, 0.0) << l.name;
    }
    expect_same_training(run_dir(l.name) + "/trace.h5", one, l.name, kTolerance);
    // The routing statistics are the step's over all ranks, so they agree too.
    for (const char* column : {"train/moe_aux_loss", "train/moe_load_cv"})
      expect_series_close(series(run_dir(l.name) + "/trace.h5", column), series(one, column), 0,
                          std::string(l.name) + " " + column, 1e-4);
  }
}

TEST_F(MoeTraining, TraceRecordsExpertsAndRouting) {
  const std::string path = recipe("moe_trace", kMoe20);
  const auto r = train(path, kMoeArch + std::string("--set moe.capacity_factor=1.0"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("mixture of experts: 2 of 2 layers routed to 8 experts (top-2"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("| load max/mean "), std::string::npos);
  const std::string trace = run_dir("moe_trace") + "/trace.h5";
  h5::File f = h5::File::open(trace, false);
  EXPECT_EQ(h5::get_string_attr(f, "/", "arch"), "moe");
  EXPECT_EQ(h5::get_int_attr(f, "/", "experts"), 8);
  EXPECT_EQ(h5::get_int_attr(f, "/", "top_k"), 2);
  EXPECT_EQ(h5::get_double_attr(f, "/", "granularity"), 2.0);
  EXPECT_EQ(h5::get_int_attr(f, "/", "expert_ffn"), 64);
  // Per layer: 8 experts of 3 x 64 x 32, 6 of them idle for each token.
  const int64_t idle = 2 * 6 * 3 * 64 * 32;
  EXPECT_EQ(h5::get_int_attr(f, "/", "active_params"),
            h5::get_int_attr(f, "/", "total_params") - idle);
  EXPECT_EQ(h5::get_int_attr(f, "/", "active_N"), h5::get_int_attr(f, "/", "N") - idle);
  for (const double aux : series(trace, "train/moe_aux_loss"))
    EXPECT_GE(aux, 1.0 - 1e-9);  // E sum f_i P_i >= 1 (equality when balanced)
  for (const double cv : series(trace, "train/moe_load_cv"))
    EXPECT_GE(cv, 0.0);
  bool dropped = false;  // capacity 1.0 on an unbalanced router drops some
  for (const double d : series(trace, "train/moe_dropped_fraction")) {
    EXPECT_GE(d, 0.0);
    EXPECT_LT(d, 1.0);
    dropped = dropped || d > 0;
  }
  EXPECT_TRUE(dropped);
}

// The bias rule reads the load summed over the dp ranks: every rank applies the same update, and
// the run is one process's.
TEST_F(MoeTraining, BiasBalancingMatchesOneProcessAcrossDataParallelRanks) {
  const std::string flags = kMoeArch + std::string(
                                           "--set moe.balance=bias --set moe.gate=sigmoid "
                                           "--set moe.aux_loss=0 --set moe.bias_update_rate=0.01");
  ASSERT_EQ(train(recipe("bias_one", kMoe20), flags).status, 0);
  const auto r = train(recipe("bias_dp2", kMoe20), flags, 2);
  ASSERT_EQ(r.status, 0) << r.output;
  expect_same_training(run_dir("bias_dp2") + "/trace.h5", run_dir("bias_one") + "/trace.h5",
                       "bias dp2", kTolerance);
  // The bias is in the checkpoint (a parameter set by the rule, never by AdamW).
  h5::File f = h5::File::open(checkpoint_path(run_dir("bias_dp2"), 20), false);
  const torch::Tensor bias = h5::read_tensor(f, "params/layers.0.moe.router_bias");
  EXPECT_GT(bias.abs().max().item<double>(), 0.0);
  EXPECT_EQ(h5::read_tensor(f, "optim/exp_avg/layers.0.moe.router_bias").abs().max().item<double>(),
            0.0);
}

TEST_F(MoeTraining, CheckpointsMoveBetweenExpertAndTensorParallelLayouts) {
  ASSERT_EQ(train(recipe("moe_ref", kMoe20), kMoeArch).status, 0);
  const auto one = series(run_dir("moe_ref") + "/trace.h5", "train/loss");
  // Writes run `from` at `flags` on `ranks`, then resumes its step-10 checkpoint as run `to` at
  // `to_flags` on `to_ranks`: steps 11 to 20 continue one process's losses.
  auto move = [&](const std::string& from, const std::string& flags, int ranks,
                  const std::string& to, const std::string& to_flags, int to_ranks) {
    const auto written = train(recipe(from, kMoe20), kMoeArch + flags, ranks);
    ASSERT_EQ(written.status, 0) << written.output;
    const auto r =
        train(recipe(to, kMoe20),
              kMoeArch + to_flags + " --resume " + checkpoint_path(run_dir(from), 10), to_ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    expect_series_close(series(run_dir(to) + "/trace.h5", "train/loss"), one, 10,
                        from + " -> " + to, kTolerance);
  };
  move("moe_ep2_ck", "--set parallel.ep=2", 2, "moe_ep2_to_one", "", 0);
  move("moe_tp2_ck", "--set parallel.tp=2", 2, "moe_tp2_to_one", "", 0);
  // ep 2 x tp 2 -> ep 4 over dp 4.
  move("moe_ep2_tp2_ck", "--set parallel.ep=2 --set parallel.tp=2", 4, "moe_to_ep4",
       "--set parallel.ep=4", 4);
}

}  // namespace
}  // namespace ladder
