// Averaged weights as free points (eval.average, trainer/run/weight_average.h): the average is
// the one the formulas give, evaluating it leaves training bitwise unchanged, and a resumed run
// continues the same average.
#include <filesystem>

#include "trainer/run/checkpoint.h"
#include "trainer/run/weight_average.h"
#include "training_fixture.h"

namespace ladder {
namespace {
namespace fs = std::filesystem;

TEST(WeightAverages, EvaluatesTheAverageAndPutsTheWeightsBack) {
  models::ParamStore store;
  store.add("w", models::Role::Hidden, models::InitKind::Normal, {3, 5}, {0, 1}, 5);
  torch::Tensor w = store.all()[0].value;
  torch::NoGradGuard no_grad;
  for (const auto kind : {WeightAverage::Ema, WeightAverage::Window}) {
    WeightAverages average(kind, 0.75, store);
    std::vector<torch::Tensor> steps;
    for (int t = 0; t < 4; ++t) {
      w.copy_(torch::randn({3, 5}));
      steps.push_back(w.clone());
      average.update(store);
    }
    torch::Tensor expected = steps[0].to(torch::kFloat64);
    for (size_t t = 1; t < steps.size(); ++t)
      expected = kind == WeightAverage::Ema
                     ? 0.75 * expected + 0.25 * steps[t].to(torch::kFloat64)
                     : expected + (steps[t].to(torch::kFloat64) - expected) / (t + 1.0);
    const torch::Tensor before = w.clone();
    const double seen = average.evaluate_with(store, [&] { return w.sum().item<double>(); });
    EXPECT_NEAR(seen, expected.sum().item<double>(), 1e-5);
    EXPECT_TRUE(torch::equal(w, before));  // the weights are back, bitwise
    // The window restarts after an evaluation; the EMA goes on.
    EXPECT_EQ(average.count(), kind == WeightAverage::Window ? 0 : 4);
  }
}

class WeightAverageTraining : public TrainingFixture {
 protected:
  static std::string train12(const std::string& name, const std::string& eval) {
    return recipe(name,
                  "[train]\nsteps = 12\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n"
                  "[checkpoint]\nevery_steps = 1\nkeep = 100\n[eval]\nevery_steps = 4\n"
                  "tokens = 256\n" +
                      eval,
                  "kind = \"constant\"\nwarmup = 2\n");
  }
  static std::string trace(const std::string& name) { return run_dir(name) + "/trace.h5"; }
  // A parameter as a checkpoint stores it, in float64.
  static torch::Tensor stored(const std::string& run, int64_t step, const std::string& name) {
    h5::File f = h5::File::open(checkpoint_path(run_dir(run), step), false);
    return h5::read_tensor(f, name).to(torch::kFloat64);
  }
};

TEST_F(WeightAverageTraining, TheAverageIsTheFormulasAndTrainingIsUnchanged) {
  ASSERT_EQ(train(train12("plain", "")).status, 0);
  ASSERT_EQ(train(train12("ema", "average = \"ema\"\nema_decay = 0.9\n")).status, 0);
  ASSERT_EQ(train(train12("window", "average = \"window\"\n")).status, 0);
  for (const char* run : {"ema", "window"}) {
    for (const char* column : {"train/loss", "train/grad_norm", "eval/loss"})
      EXPECT_EQ(series(trace(run), column), series(trace("plain"), column)) << run << column;
    const auto averaged = series(trace(run), "eval/average_loss");
    const auto loss = series(trace(run), "eval/loss");
    ASSERT_EQ(averaged.size(), 3u) << run;
    for (size_t i = 0; i < averaged.size(); ++i) {
      EXPECT_TRUE(std::isfinite(averaged[i])) << run;
      EXPECT_NE(averaged[i], loss[i]) << run << " row " << i;  // another model was evaluated
    }
    h5::File f = h5::File::open(trace(run), false);
    EXPECT_EQ(h5::get_string_attr(f, "/", "weight_average"), run);
  }
  for (const double a : series(trace("plain"), "eval/average_loss"))
    EXPECT_TRUE(std::isnan(a));

  // The stored averages against the checkpoints' weights: the EMA over steps 1..12, the window
  // over the steps since the evaluation at 8.
  const std::string w = "layers.0.mlp.w_up";
  torch::Tensor ema = stored("ema", 1, "params/" + w);
  for (int64_t t = 2; t <= 12; ++t)
    ema = 0.9 * ema + 0.1 * stored("ema", t, "params/" + w);
  EXPECT_TRUE(torch::allclose(stored("ema", 12, "average/params/" + w), ema, 1e-5, 1e-7));
  const torch::Tensor window =
      (stored("window", 9, "params/" + w) + stored("window", 10, "params/" + w)) / 2;
  EXPECT_TRUE(torch::allclose(stored("window", 10, "average/params/" + w), window, 1e-5, 1e-7));
  h5::File f = h5::File::open(checkpoint_path(run_dir("window"), 10), false);
  EXPECT_EQ(h5::get_int_attr(f, "/", "average_count"), 2);
}

TEST_F(WeightAverageTraining, AResumedRunContinuesTheSameAverage) {
  const std::string ema = "average = \"ema\"\nema_decay = 0.8\n";
  // Evaluated every 3 steps, so that the half run's last evaluation (at 6) is the whole run's too.
  ASSERT_EQ(train(train12("whole_ema", ema), "--set eval.every_steps=3").status, 0);
  const std::string half = train12("half_ema", ema);
  ASSERT_EQ(train(half, "--set eval.every_steps=3 --set train.steps=6").status, 0);
  ASSERT_EQ(train(half, "--set eval.every_steps=3 --resume auto").status, 0);
  EXPECT_EQ(series(trace("half_ema"), "eval/average_loss"),
            series(trace("whole_ema"), "eval/average_loss"));  // bitwise
  // The option is refused where it cannot be taken.
  const auto r =
      train(train12("average_no_eval", "average = \"ema\"\n"), "--set eval.every_steps=0");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("eval.average: is evaluated at every evaluation: it needs "
                          "eval.every_steps > 0"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace ladder
