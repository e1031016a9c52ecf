// Branches (`ladder train --branch-from`, trainer/run/branch.h): a cooldown branched from a stable
// run's checkpoint is the run of its length, bitwise in fp32; what a branch may not change is
// refused, naming the key; a branch resumes and branches again.
#include <filesystem>

#include "optim/schedule.h"
#include "trainer/run/checkpoint.h"
#include "training_fixture.h"

namespace ladder {
namespace {
namespace fs = std::filesystem;

// Warm-up, then a stable phase, then a 1-sqrt cooldown over the last fifth (Haegele et al. 2024).
const char* kWsd = "kind = \"wsd\"\nwarmup = 2\ndecay_fraction = 0.2\ndecay_shape = \"1-sqrt\"\n";

// `steps` steps, logged every step, evaluated every 4, intermediate checkpoints at `points`.
std::string train_section(int steps, const std::string& points) {
  return "[train]\nsteps = " + std::to_string(steps) +
         "\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n[eval]\nevery_steps = 4\n"
         "tokens = 256\n[checkpoint]\nevery_steps = 2\nkeep = 1\nintermediate = " +
         points + "\n";
}

class Branching : public TrainingFixture {
 protected:
  // The stable run: 40 steps, its cooldown from step 32; checkpoints at 16 and 20 kept.
  static void SetUpTestSuite() {
    TrainingFixture::SetUpTestSuite();
    const auto r = train(recipe("stable", train_section(40, "[16, 20]"), kWsd));
    ASSERT_EQ(r.status, 0) << r.output;
  }
  static std::string stable_checkpoint(int64_t step) {
    return checkpoint_path(run_dir("stable"), step);
  }
  static std::string trace(const std::string& name) { return run_dir(name) + "/trace.h5"; }

  // `branch`'s rows (from its branch step on) bitwise equal to the last rows of `whole`, a run of
  // the same length from scratch.
  static void expect_rows_are_the_whole_runs(const std::string& branch, const std::string& whole) {
    for (const char* column : {"train/step", "train/tokens", "train/flops", "train/lr",
                               "train/loss", "train/grad_norm", "eval/step", "eval/loss"}) {
      const auto b = series(trace(branch), column), w = series(trace(whole), column);
      ASSERT_FALSE(b.empty()) << branch << " " << column;
      ASSERT_LT(b.size(), w.size()) << branch << " " << column;
      const size_t offset = w.size() - b.size();
      for (size_t i = 0; i < b.size(); ++i)
        EXPECT_EQ(b[i], w[i + offset]) << branch << " " << column << " row " << i;  // bitwise
    }
  }
};

TEST_F(Branching, ACooldownFromTheStablePhaseIsTheRunOfItsLength) {
  // 20 steps with a cooldown of 4 from step 16: branched from the stable run at 16.
  const std::string branch = recipe("cool20", train_section(20, "\"none\""), kWsd);
  const auto r = train(branch, "--branch-from " + stable_checkpoint(16));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("branched from " + stable_checkpoint(16) + " at step 16"),
            std::string::npos)
      << r.output;
  ASSERT_EQ(train(recipe("whole20", train_section(20, "\"none\""), kWsd)).status, 0);
  expect_rows_are_the_whole_runs("cool20", "whole20");

  // Its own rows only, from the branch step on; the learning rates those of the formula.
  const auto steps = series(trace("cool20"), "train/step");
  const auto lrs = series(trace("cool20"), "train/lr");
  ASSERT_EQ(steps, (std::vector<double>{17, 18, 19, 20}));
  optim::ScheduleConfig wsd;
  wsd.kind = optim::LrSchedule::Wsd, wsd.warmup = 2, wsd.decay_fraction = 0.2;
  wsd.decay_shape = optim::DecayShape::OneMinusSqrt, wsd.final_lr_fraction = 0.1;
  for (size_t i = 0; i < steps.size(); ++i) {
    const auto step = static_cast<int64_t>(steps[i]) - 1;  // the update that ends this row's step
    const double q = static_cast<double>(step - 16 + 1) / 4;
    EXPECT_DOUBLE_EQ(lrs[i], 3e-3 * (0.1 + 0.9 * (1 - std::sqrt(q)))) << "step " << step + 1;
    EXPECT_EQ(lrs[i], optim::lr_at(step, 20, 3e-3, wsd)) << "step " << step + 1;
  }

  // The parent, the branch step and the parent's FLOPs up to it.
  h5::File f = h5::File::open(trace("cool20"), false);
  EXPECT_EQ(h5::get_string_attr(f, "/", "branch_of"), run_dir("stable"));
  EXPECT_EQ(h5::get_string_attr(f, "/", "branch_checkpoint"), stable_checkpoint(16));
  EXPECT_EQ(h5::get_int_attr(f, "/", "branch_step"), 16);
  const double flops_per_token = h5::get_double_attr(f, "/", "flops_per_token");
  EXPECT_DOUBLE_EQ(h5::get_double_attr(f, "/", "parent_flops"), flops_per_token * 16 * 4 * 32);
  h5::File whole = h5::File::open(trace("whole20"), false);
  EXPECT_EQ(h5::get_string_attr(whole, "/", "branch_of"), "");
  EXPECT_EQ(h5::get_int_attr(whole, "/", "branch_step"), 0);
}

TEST_F(Branching, ABranchResumesAndBranchesAgain) {
  // A branch of 30 steps (cooldown from 24) from the stable run at 16, keeping a checkpoint at 20.
  const std::string b1 = recipe("b1", train_section(30, "[20]"), kWsd);
  ASSERT_EQ(train(b1, "--branch-from " + stable_checkpoint(16)).status, 0);
  ASSERT_EQ(train(recipe("whole30", train_section(30, "\"none\""), kWsd)).status, 0);
  expect_rows_are_the_whole_runs("b1", "whole30");

  // Resumed without --branch-from (its folder remembers), from its own newest checkpoint after
  // the last two were lost, then with none of its own left: from the parent's again.
  for (const int keep_up_to : {26, 0}) {
    for (const int64_t step : checkpoint_steps(run_dir("b1")))
      if (step > keep_up_to) fs::remove(checkpoint_path(run_dir("b1"), step));
    const auto r = train(b1, "--resume auto");
    ASSERT_EQ(r.status, 0) << r.output;
    expect_rows_are_the_whole_runs("b1", "whole30");
    h5::File f = h5::File::open(trace("b1"), false);
    EXPECT_EQ(h5::get_int_attr(f, "/", "branch_step"), 16) << keep_up_to;
  }

  // A branch of the branch: 25 steps (cooldown from 20) from b1's checkpoint at 20.
  const std::string b1_at_20 = checkpoint_path(run_dir("b1"), 20);
  ASSERT_TRUE(fs::exists(b1_at_20));
  const auto r =
      train(recipe("b2", train_section(25, "\"none\""), kWsd), "--branch-from " + b1_at_20);
  ASSERT_EQ(r.status, 0) << r.output;
  ASSERT_EQ(train(recipe("whole25", train_section(25, "\"none\""), kWsd)).status, 0);
  expect_rows_are_the_whole_runs("b2", "whole25");
  h5::File f = h5::File::open(trace("b2"), false);
  EXPECT_EQ(h5::get_string_attr(f, "/", "branch_of"), run_dir("b1"));
  EXPECT_EQ(h5::get_int_attr(f, "/", "branch_step"), 20);
}

TEST_F(Branching, WhatABranchMayNotChangeIsRefused) {
  struct Case {
    const char* name;
    std::string extra, flags, message;
  };
  const std::string at16 = "--branch-from " + stable_checkpoint(16);
  const std::vector<Case> cases = {
      {"wider", train_section(20, "\"none\""), at16 + " --set model.d_model=64",
       "ladder: error: --branch-from " + stable_checkpoint(16) +
           ": model.d_model differs from the parent's: 64 here, 32 in the checkpoint's recipe"},
      {"other_lr", train_section(20, "\"none\""), at16 + " --set optim.lr=1e-3",
       "optim.lr differs from the parent's: 0.001 here, 0.003"},
      // A cooldown of round(0.2 x 18) = 4 steps from step 14: before the branch step.
      {"early_cooldown", train_section(18, "\"none\""), at16,
       "the schedule differs from the parent's before the branch step 16: at step 15 the "
       "learning rate is"},
      {"cosine", train_section(20, "\"none\""), at16 + " --set schedule.kind=cosine",
       "the schedule differs from the parent's before the branch step 16: at step 4"},
      {"shorter", train_section(16, "\"none\""), at16,
       "the checkpoint is at step 16: the branch's train.steps (16) must lie beyond it"},
      {"missing", train_section(20, "\"none\""), "--branch-from " + run_dir("stable") + "/nope.h5",
       "ladder: error: " + run_dir("stable") + "/nope.h5: no such checkpoint"},
      {"init_too", train_section(20, "\"none\""), at16 + " --init-from " + stable_checkpoint(16),
       "excludes"},
  };
  for (const Case& c : cases) {
    const auto r = train(recipe(std::string("refused_") + c.name, c.extra, kWsd), c.flags);
    EXPECT_EQ(r.status, 2) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.name << ": " << r.output;
    EXPECT_FALSE(fs::exists(trace(std::string("refused_") + c.name))) << c.name;
  }
}

}  // namespace
}  // namespace ladder
