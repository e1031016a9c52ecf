// Tensor-parallel training with the `ladder` binary under mpirun, against one process at the same
// global batch and seed (fp32): losses, gradient norms and validation losses at tp 2 and 4, with
// and without sequence parallelism, composed with dp; checkpoints that move between tp and other
// layouts.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "trainer/run/checkpoint.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

class TensorParallelTraining : public TrainingFixture {};

// Four heads and four KV heads, so that tp = 4 splits them; global batch 8 in micro-batches of 2.
const char* kTrain20 =
    "[train]\nsteps = 20\nglobal_batch = 8\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 10\nkeep = 2\n[eval]\nevery_steps = 10\ntokens = 512\n";
const char* kHeads = "--set model.n_heads=4 --set model.n_kv_heads=4 ";

// A tensor-parallel step sums its matmuls' partial products and its losses' pieces in another order
// than one process: fp32's last bits, amplified over 20 steps. The bound.
constexpr double kTolerance = 1e-5;

void expect_close(const std::vector<double>& a, const std::vector<double>& b, size_t offset,
                  const std::string& what) {
  expect_series_close(a, b, offset, what, kTolerance);
}

TEST_F(TensorParallelTraining, LossesMatchOneProcess) {
  ASSERT_EQ(train(recipe("one", kTrain20), kHeads).status, 0);
  const std::string one = run_dir("one") + "/trace.h5";
  for (const double bytes : series(one, "train/tp_comm_bytes"))
    EXPECT_EQ(bytes, 0.0);  // alone: nothing to communicate
  struct Layout {
    int tp, ranks;
    bool sp;
  };
  for (const Layout l : {Layout{2, 2, false}, Layout{2, 2, true}, Layout{4, 4, false},
                         Layout{4, 4, true}, Layout{2, 4, false}, Layout{2, 4, true}}) {
    const std::string name =
        "tp" + std::to_string(l.tp) + "_ranks" + std::to_string(l.ranks) + (l.sp ? "_sp" : "");
    const auto r = train(recipe(name, kTrain20),
                         kHeads + std::string("--set parallel.tp=") + std::to_string(l.tp) +
                             " --set parallel.sequence_parallel=" + (l.sp ? "true" : "false"),
                         l.ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    const std::string trace = run_dir(name) + "/trace.h5";
    expect_same_training(trace, one, name, kTolerance);
    // Power iteration over row and column blocks summed across the group (fp32).
    expect_same_spectra(trace, one, name, 1e-4);
    EXPECT_NE(r.output.find("tensor parallel: tp=" + std::to_string(l.tp)), std::string::npos);
    for (const double bytes : series(trace, "train/tp_comm_bytes"))
      EXPECT_GT(bytes, 0.0) << name;
  }
}

TEST_F(TensorParallelTraining, CheckpointsMoveBetweenTpAndOtherLayouts) {
  ASSERT_EQ(train(recipe("one", kTrain20), kHeads).status, 0);
  const auto one = series(run_dir("one") + "/trace.h5", "train/loss");
  // tp = 2 (with sequence parallelism and ZeRO-1 over dp = 2) -> one process.
  ASSERT_EQ(train(recipe("tp2", kTrain20),
                  kHeads + std::string("--set parallel.tp=2 --set parallel.sequence_parallel=true "
                                       "--set optim.zero=1 --set parallel.bucket_mb=0.01"),
                  4)
                .status,
            0);
  // Resumes run `name` (flags, ranks) from `checkpoint`: steps 11 to 20 continue one's losses.
  auto resume = [&](const std::string& name, const std::string& flags,
                    const std::string& checkpoint, int ranks) {
    const auto r = train(recipe(name, kTrain20), kHeads + flags + " --resume " + checkpoint, ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    expect_close(series(run_dir(name) + "/trace.h5", "train/loss"), one, 10, name);
  };
  resume("tp2_to_one", "", checkpoint_path(run_dir("tp2"), 10), 0);
  // dp = 2 -> tp = 2; and one process -> tp = 4.
  ASSERT_EQ(train(recipe("dp2", kTrain20), kHeads, 2).status, 0);
  resume("dp2_to_tp2", "--set parallel.tp=2", checkpoint_path(run_dir("dp2"), 10), 2);
  resume("one_to_tp4", "--set parallel.tp=4", checkpoint_path(run_dir("one"), 10), 4);
}

}  // namespace
}  // namespace ladder
