// Data-parallel training with the `ladder` binary under mpirun, against one process at the same
// global batch and seed: losses, ZeRO-1, checkpoints that reshard across dp sizes, bitwise resume.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "trainer/run/checkpoint.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

namespace fs = std::filesystem;

class DataParallelTraining : public TrainingFixture {};

// global_batch 8 = dp x micro-batches x 2: 4 micro-batches alone, 2 per rank at dp 2, 1 at dp 4.
const char* kTrain20 =
    "[train]\nsteps = 20\nglobal_batch = 8\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 10\nkeep = 2\n[eval]\nevery_steps = 10\ntokens = 512\n";

// The same gradients summed in another grouping (micro-batches on one rank, then across ranks)
// differ in fp32's last bits, ~1e-7 relative; measured here: at most 6e-8 on the loss over 20
// steps. 1e-6 leaves room for that drift and still catches a wrong batch, scale or update.
constexpr double kTolerance = 1e-6;

void expect_close(const std::vector<double>& a, const std::vector<double>& b, size_t offset,
                  const std::string& what) {
  expect_series_close(a, b, offset, what, kTolerance);
}

TEST_F(DataParallelTraining, LossesMatchOneProcessWithAndWithoutZero) {
  ASSERT_EQ(train(recipe("one", kTrain20)).status, 0);
  const std::string one = run_dir("one") + "/trace.h5";
  for (const double bytes : series(one, "train/comm_bytes"))
    EXPECT_EQ(bytes, 0.0);  // alone: nothing to communicate
  struct Layout {
    int ranks;
    int zero;
    bool overlap;
  };
  for (const Layout l :
       {Layout{2, 0, true}, Layout{2, 1, true}, Layout{4, 0, false}, Layout{4, 1, true}}) {
    const std::string name = "dp" + std::to_string(l.ranks) + "_zero" + std::to_string(l.zero) +
                             (l.overlap ? "" : "_sync");
    const auto r =
        train(recipe(name, kTrain20),
              "--set optim.zero=" + std::to_string(l.zero) +
                  " --set parallel.overlap_grad_reduce=" + (l.overlap ? "true" : "false"),
              l.ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    const std::string trace = run_dir(name) + "/trace.h5";
    expect_same_training(trace, one, name, kTolerance);
    for (const double bytes : series(trace, "train/comm_bytes"))
      EXPECT_GT(bytes, 0.0) << name;
    const auto step_s = series(trace, "train/step_s"), comm_s = series(trace, "train/comm_s");
    for (size_t i = 0; i < step_s.size(); ++i)
      EXPECT_TRUE(comm_s[i] >= 0 && comm_s[i] <= step_s[i]) << name << " row " << i;
    EXPECT_NE(r.output.find("data parallel: dp=" + std::to_string(l.ranks)), std::string::npos);
  }
}

TEST_F(DataParallelTraining, CheckpointFromDp2ZeroResumesAtDp1AndDp4) {
  ASSERT_EQ(train(recipe("one", kTrain20)).status, 0);
  const auto one = series(run_dir("one") + "/trace.h5", "train/loss");
  // Small buckets: the ZeRO shards cut many parameters, so the checkpoint is written in pieces.
  ASSERT_EQ(train(recipe("zero2", kTrain20), "--set optim.zero=1 --set parallel.bucket_mb=0.01", 2)
                .status,
            0);
  const std::string at10 = checkpoint_path(run_dir("zero2"), 10);
  ASSERT_TRUE(fs::exists(at10));
  for (const int ranks : {1, 4}) {
    const std::string name = "from_zero2_at_dp" + std::to_string(ranks);
    const auto r = train(recipe(name, kTrain20), "--set optim.zero=0 --resume " + at10,
                         ranks == 1 ? 0 : ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from " + at10 + " at step 10"), std::string::npos) << r.output;
    // Steps 11 to 20 continue the single process's losses.
    expect_close(series(run_dir(name) + "/trace.h5", "train/loss"), one, 10, name);
  }
  // And a single-process checkpoint resumes under ZeRO-1 at dp 4.
  const auto r = train(recipe("from_one_at_zero4", kTrain20),
                       "--set optim.zero=1 --set parallel.bucket_mb=0.01 --resume " +
                           checkpoint_path(run_dir("one"), 10),
                       4);
  ASSERT_EQ(r.status, 0) << r.output;
  expect_close(series(run_dir("from_one_at_zero4") + "/trace.h5", "train/loss"), one, 10,
               "one -> zero4");
}

TEST_F(DataParallelTraining, ResumeAtFixedLayoutIsBitwiseIdentical) {
  const std::string constant = "kind = \"constant\"\nwarmup = 2\n";
  for (const int zero : {0, 1}) {
    const std::string z = "--set optim.zero=" + std::to_string(zero);
    const std::string whole = "whole" + std::to_string(zero), half = "half" + std::to_string(zero);
    ASSERT_EQ(train(recipe(whole, kTrain20, constant), z + " --set train.steps=12", 2).status, 0);
    const std::string half_recipe = recipe(half, kTrain20, constant);
    ASSERT_EQ(train(half_recipe, z + " --set train.steps=6", 2).status, 0);
    const auto resumed = train(half_recipe, z + " --set train.steps=12 --resume auto", 2);
    ASSERT_EQ(resumed.status, 0) << resumed.output;
    const auto a = series(run_dir(whole) + "/trace.h5", "train/loss");
    const auto b = series(run_dir(half) + "/trace.h5", "train/loss");
    ASSERT_EQ(a.size(), 12u);
    EXPECT_EQ(a, b) << "zero " << zero;  // bitwise
  }
}

TEST_F(DataParallelTraining, DivergenceStopsEveryRankWithOneMessage) {
  const auto r =
      train(recipe("diverge", kTrain20 + std::string("[optim]\nlr = 1e30\ngrad_clip = 0.0\n")),
            "--set optim.zero=1", 2);
  EXPECT_EQ(r.status, 2) << r.output;
  size_t count = 0;
  for (size_t at = r.output.find("ladder: error: train: step "); at != std::string::npos;
       at = r.output.find("ladder: error: train: step ", at + 1))
    ++count;
  EXPECT_EQ(count, 1u) << r.output;
  EXPECT_EQ(r.output.find("MPI_ABORT"), std::string::npos) << r.output;
}

// A recipe mistake that only a layout of several ranks can make is refused by every rank, with one
// message, before anything is written.
TEST_F(DataParallelTraining, LayoutMistakesAreRefusedOnEveryRankWithOneMessage) {
  const auto r = train(recipe("islands", kTrain20),
                       "--set parallel.islands=2 --set diloco.inner_steps=4 "
                       "--set diloco.overlap_steps=4",
                       2);
  EXPECT_EQ(r.status, 2) << r.output;
  const std::string message =
      "ladder: error: --set diloco.overlap_steps=4: diloco.overlap_steps: must be below "
      "diloco.inner_steps (4)";
  size_t count = 0;
  for (size_t at = r.output.find(message); at != std::string::npos;
       at = r.output.find(message, at + 1))
    ++count;
  EXPECT_EQ(count, 1u) << r.output;
  EXPECT_FALSE(fs::exists(run_dir("islands")));  // refused before any work
}

// A branch across layouts (trainer/run/branch.h): a cooldown at dp = 2 with ZeRO-1 from a
// one-process stable run's checkpoint is the one-process run of its length, within the drift of
// another grouping of the gradient sums.
TEST_F(DataParallelTraining, ABranchMovesBetweenLayouts) {
  const char* wsd = "kind = \"wsd\"\nwarmup = 2\ndecay_fraction = 0.2\n";
  const std::string train_section =
      "[train]\nglobal_batch = 8\nmicro_batch = 2\nlog_every = 1\n[checkpoint]\nevery_steps = "
      "0\n[eval]\nevery_steps = 5\ntokens = 512\n";
  ASSERT_EQ(train(recipe("stable_dp", train_section, wsd),
                  "--set train.steps=40 --set checkpoint.intermediate=[16]")
                .status,
            0);
  ASSERT_EQ(train(recipe("whole_dp", train_section, wsd), "--set train.steps=20").status, 0);
  const auto r = train(recipe("branch_dp2", train_section, wsd),
                       "--set train.steps=20 --set optim.zero=1 --branch-from " +
                           checkpoint_path(run_dir("stable_dp"), 16),
                       2);
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string branch = run_dir("branch_dp2") + "/trace.h5",
                    whole = run_dir("whole_dp") + "/trace.h5";
  for (const char* column : {"train/loss", "train/grad_norm", "eval/loss"}) {
    const auto b = series(branch, column), w = series(whole, column);
    ASSERT_LT(b.size(), w.size()) << column;
    expect_close(b, w, w.size() - b.size(), std::string("branch at dp 2 ") + column);
  }
  EXPECT_EQ(series(branch, "train/step").front(), 17);
}

}  // namespace
}  // namespace ladder
