// The parametrizations end to end: muP at its base width trains exactly like SP, and a run records
// the rules it was trained under and keeps them on resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <sstream>

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
    // The top singular values: at the start and at the end (every 100 steps by default), the
    // final one that of the checkpointed matrix.
    EXPECT_EQ(series(run_dir("mup_rules") + "/trace.h5", "spectra/step"),
              (std::vector<double>{0, 10}));
    for (const char* m : {"layers.0.attn.wq", "layers.1.mlp.w_down"}) {
      const auto sigma = series(run_dir("mup_rules") + "/trace.h5", std::string("spectra/") + m);
      ASSERT_EQ(sigma.size(), 2u);
      const double expected =
          torch::linalg_svdvals(h5::read_tensor(c, std::string("params/") + m))[0].item<double>();
      EXPECT_NEAR(sigma[1], expected, 1e-3 * expected) << m;
      EXPECT_NE(sigma[0], sigma[1]) << m;
    }
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

TEST_F(MupTraining, InspectPrintsTopSingularValuesAgainstWidth) {
  const std::string run =
      "[train]\nsteps = 6\nglobal_batch = 4\nmicro_batch = 4\n[eval]\nevery_steps = 0\n"
      "spectra_every_steps = 3\n[checkpoint]\nevery_steps = 0\nintermediate = \"none\"\n"
      "[mup]\nparametrization = \"mup\"\nbase_width = 32\n";
  ASSERT_EQ(train(recipe("spectra_wide", run),
                  "--set model.d_model=64 --set run.out_dir=\"" + dir_->path("spectra") + "\"")
                .status,
            0);
  ASSERT_EQ(
      train(recipe("spectra_narrow", run), "--set run.out_dir=\"" + dir_->path("spectra") + "\"")
          .status,
      0);
  const auto steps = series(dir_->path("spectra/spectra_wide/trace.h5"), "spectra/step");
  EXPECT_EQ(steps, (std::vector<double>{0, 3, 6}));
  const auto r =
      run_command(testing::ladder_binary() + " inspect --spectra " + dir_->path("spectra"));
  ASSERT_EQ(r.status, 0) << r.output;
  // One row per run, narrow first, with every kind of hidden matrix as a column.
  const size_t narrow = r.output.find("spectra_narrow"), wide = r.output.find("spectra_wide");
  ASSERT_NE(narrow, std::string::npos) << r.output;
  ASSERT_NE(wide, std::string::npos) << r.output;
  EXPECT_LT(narrow, wide) << r.output;
  for (const char* kind :
       {"attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp.w_gate", "mlp.w_up", "mlp.w_down"})
    EXPECT_NE(r.output.find(kind), std::string::npos) << kind << "\n" << r.output;
  EXPECT_NE(r.output.find("\n    32 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\n    64 "), std::string::npos) << r.output;
  // One trace alone: its own summary ends with them.
  const auto one = run_command(testing::ladder_binary() + " inspect " +
                               dir_->path("spectra/spectra_wide/trace.h5"));
  EXPECT_NE(one.output.find("top singular values at step 6 (mean over layers; 3 records)"),
            std::string::npos)
      << one.output;
}

// The slopes coordcheck prints: slopes.csv rows "step,layer,slope".
std::map<std::pair<int, std::string>, double> read_slopes(const std::string& path) {
  std::map<std::pair<int, std::string>, double> slopes;
  std::istringstream in(testing::read_file(path));
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "step,layer,slope");
  while (std::getline(in, line)) {
    const size_t a = line.find(','), b = line.find(',', a + 1);
    slopes[{std::stoi(line.substr(0, a)), line.substr(a + 1, b - a - 1)}] =
        std::stod(line.substr(b + 1));
  }
  return slopes;
}

TEST_F(MupTraining, CoordcheckSeparatesMupFromSp) {
  // The shipped coordcheck recipes on three widths and four steps: under muP no layer type's
  // output moves with width once training has started; under SP the hidden branches grow.
  std::map<std::string, std::map<std::pair<int, std::string>, double>> slopes;
  for (const std::string p : {"mup", "sp"}) {
    const auto r = run_command(testing::ladder_binary() + " coordcheck " + LADDER_SOURCE_DIR +
                               "/recipes/coordcheck-" + p + ".toml --widths 64,128,256 --steps 4 " +
                               "--threads 1 --set data.path=\"" + dir_->path("ds") + "\" --out " +
                               dir_->path("cc-" + p));
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("log-log slope of mean |output| against width (" + p),
              std::string::npos)
        << r.output;
    EXPECT_TRUE(std::filesystem::exists(dir_->path("cc-" + p + "/coords.csv")));
    slopes[p] = read_slopes(dir_->path("cc-" + p + "/slopes.csv"));
    ASSERT_EQ(slopes[p].size(), 5u * 4u);
  }
  for (const char* layer : {"embedding", "attention", "mlp", "residual", "logits"})
    EXPECT_LT(std::abs(slopes["mup"][{3, layer}]), 0.2) << layer;
  EXPECT_GT((slopes["sp"][{3, "residual"}]), 0.8);
  EXPECT_GT((slopes["sp"][{3, "mlp"}]), 0.8);
}

}  // namespace
}  // namespace ladder
