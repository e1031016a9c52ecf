// The parametrizations end to end: muP at its base width trains exactly like SP, and a run records
// the rules it was trained under and keeps them on resume.
#include <gtest/gtest.h>

#include "core/hdf5.h"
#include "training_fixture.h"

namespace ladder {
namespace {

using testing::run_command;

class MupTraining : public TrainingFixture {};

const char* kTrain10 =
    "[train]\nsteps = 10\nglobal_batch = 4\nmicro_batch = 4\nlog_every = 1\n[optim]\nlr = 1e-2\n"
    "[checkpoint]\nevery_steps = 5\nintermediate = \"none\"\n[eval]\nevery_steps = 5\n"
    "tokens = 256\n";

TEST_F(MupTraining, MupAtTheBaseWidthTrainsLikeSp) {
  // d_model 32 with 2 heads: head_dim 16. At m = 1 muP changes nothing but the attention scale,
  // 1/d_head against 1/sqrt(d_head): a multiplier of sqrt(16) = 4 makes them equal.
  ASSERT_EQ(train(recipe("sp_base", std::string(kTrain10) + "[mup]\nbase_width = 32\n")).status, 0);
  const auto r = train(recipe("mup_base", std::string(kTrain10) +
                                              "[mup]\nparametrization = \"mup\"\nbase_width = 32\n"
                                              "attention_multiplier = 4.0\n"));
  ASSERT_EQ(r.status, 0) << r.output;
  expect_same_training(run_dir("mup_base") + "/trace.h5", run_dir("sp_base") + "/trace.h5",
                       "mup at m = 1", 1e-5);
  // Without the multiplier the attention differs, and so does training.
  ASSERT_EQ(train(recipe("mup_base_plain", std::string(kTrain10) +
                                               "[mup]\nparametrization = \"mup\"\nbase_width = "
                                               "32\n"))
                .status,
            0);
  EXPECT_NE(series(run_dir("mup_base_plain") + "/trace.h5", "train/loss").back(),
            series(run_dir("sp_base") + "/trace.h5", "train/loss").back());
}

TEST_F(MupTraining, RunRecordsItsRulesAndResumeKeepsThem) {
  const std::string mup =
      "[mup]\nparametrization = \"mup\"\nbase_width = 16\nwd_rule = \"width_power\"\n";
  const auto r = train(recipe("mup_rules", std::string(kTrain10) + mup));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto loss = series(run_dir("mup_rules") + "/trace.h5", "train/loss");
  EXPECT_LT(loss.back(), loss.front() - 0.5);
  {
    h5::File f = h5::File::open(run_dir("mup_rules") + "/trace.h5", false);
    EXPECT_EQ(h5::get_string_attr(f, "/", "parametrization"), "mup");
    EXPECT_EQ(h5::get_string_attr(f, "/", "wd_rule"), "width_power");
    EXPECT_DOUBLE_EQ(h5::get_double_attr(f, "/", "width_multiplier"), 2.0);
    const std::string rules = h5::get_string_attr(f, "/", "rules");
    // m = 2: hidden lr / 2, eps / 2, wd x 2 (lambda 0.1 by default); std 1/sqrt(32).
    EXPECT_NE(
        rules.find("layers.1.mlp.w_up\thidden\t[128, 32]\t[64, 16]\t0.17677669529663687\t0.5\t"
                   "0.2\t5e-09\n"),
        std::string::npos)
        << rules;
    EXPECT_NE(rules.find("final_norm\tvector\t[32]\t[16]\t"), std::string::npos) << rules;
    h5::File c = h5::File::open(run_dir("mup_rules") + "/checkpoints/step_00000010.h5", false);
    EXPECT_EQ(h5::get_string_attr(c, "/", "rules"), rules);
  }
  // The same run resumed under other rules is refused before any step, naming what changed.
  std::filesystem::remove(run_dir("mup_rules") + "/checkpoints/step_00000010.h5");
  const auto changed = train(recipe("mup_rules", std::string(kTrain10) + mup),
                             "--resume auto --set mup.wd_rule=\"constant\"");
  EXPECT_EQ(changed.status, 2);
  EXPECT_NE(changed.output.find("step_00000005.h5: parameter layers.0.attn.wq was trained with "
                                "weight_decay 0.2 but the recipe gives 0.1: resuming keeps the "
                                "parametrization's rules"),
            std::string::npos)
      << changed.output;
  // With its own rules it continues.
  const auto same = train(recipe("mup_rules", std::string(kTrain10) + mup), "--resume auto");
  EXPECT_EQ(same.status, 0) << same.output;
}

}  // namespace
}  // namespace ladder
