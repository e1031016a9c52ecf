// `ladder fit --law hyperparameters` on synthetic sweeps with known optimum laws.
#include "scaling/hyperparameters.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "scaling/fit_command.h"
#include "test_util.h"

namespace ladder::scaling {
namespace {

// The truth: lr* = 0.02 (N / 1e8)^-0.5 (D / 1e9)^0.2 and B* = 2^17 (D / 1e9)^0.5 tokens; the loss
// a parabola in ln lr and in ln B around them (separable), plus a Chinchilla-like base.
double lr_opt(double N, double D) {
  return 0.02 * std::pow(N / 1e8, -0.5) * std::pow(D / 1e9, 0.2);
}
double batch_opt(double D) {
  return 131072 * std::pow(D / 1e9, 0.5);
}

// 9 cells (3 N x 3 D), each a grid of 10 learning rates x 7 batches (shared grids, not centred on
// the optima), 0.05% noise; weight decay 0.1. Returns the CSV's path.
// `small_batches`: 3 batches of 2K..8K tokens instead, below every cell's optimum.
std::string write_sweep(const testing::TempDir& dir, double noise_sd = 5e-4, bool narrow = false,
                        bool small_batches = false) {
  std::mt19937_64 gen(5);
  std::normal_distribution<double> noise(0.0, noise_sd);
  const std::string path = dir.path(narrow          ? "narrow.csv"
                                    : small_batches ? "small_batches.csv"
                                                    : "sweep.csv");
  std::ofstream out(path);
  out << "run,N,D,lr,batch,weight_decay,loss\n";
  int run = 0;
  for (double N : {1e8, 3e8, 1e9})
    for (double D : {1e9, 4e9, 1.6e10})
      for (int i = 0; i < (narrow ? 3 : 10); ++i)
        for (int j = 0; j < (small_batches ? 3 : 7); ++j) {
          const double lr = (narrow ? 0.08 : 1e-3) * std::pow(2.0, i);
          const double batch = (small_batches ? 2048 : 16384) * std::pow(2.0, j);
          const double loss = (1.7 + 400 / std::pow(N, 0.34) + 410 / std::pow(D, 0.28) +
                               0.05 * std::pow(std::log(lr / lr_opt(N, D)), 2) +
                               0.03 * std::pow(std::log(batch / batch_opt(D)), 2)) *
                              std::exp(noise(gen));
          out << "r" << run++ << "," << N << "," << D << "," << lr << "," << batch << ",0.1,"
              << loss << "\n";
        }
  return path;
}

nlohmann::json fit_json(const std::string& csv, const testing::TempDir& dir, int64_t holdout,
                        int64_t bootstrap = 100, bool plots = false) {
  FitCommand c;
  c.inputs = {csv};
  c.law = "hyperparameters";
  c.out_dir = dir.path("fit");
  c.fit.bootstrap = bootstrap;
  c.holdout = holdout;
  c.plots = plots;
  EXPECT_EQ(run_fit(c), 0);
  std::ifstream in(dir.path("fit/fit.json"));
  return nlohmann::json::parse(in);
}

TEST(HyperparameterLaws, KnownExponentsComeBackWithinTheirIntervals) {
  testing::TempDir dir;
  const auto j = fit_json(write_sweep(dir), dir, /*holdout=*/1, 100, /*plots=*/true);
  ASSERT_EQ(j["hyperparameters"].size(), 2u);
  const auto& lr = j["hyperparameters"][0];
  const auto& batch = j["hyperparameters"][1];
  EXPECT_EQ(lr["hyperparameter"], "lr");
  EXPECT_EQ(batch["hyperparameter"], "batch");
  const std::vector<std::tuple<const nlohmann::json*, const char*, double>> truth = {
      {&lr, "N", -0.5}, {&lr, "D", 0.2}, {&batch, "N", 0.0}, {&batch, "D", 0.5}};
  for (const auto& [law, variable, exponent] : truth) {
    const double value = (*law)["exponents"][variable].get<double>();
    const auto ci = (*law)["exponents_ci95"][variable];
    EXPECT_NEAR(value, exponent, 0.03) << (*law)["hyperparameter"] << " " << variable;
    EXPECT_LE(ci[0].get<double>(), exponent) << (*law)["hyperparameter"] << " " << variable;
    EXPECT_GE(ci[1].get<double>(), exponent) << (*law)["hyperparameter"] << " " << variable;
  }
  // The held-out cell (the most compute: N 1e9, D 1.6e10) predicted from the other 8.
  const auto& held = lr["cells"].back();
  EXPECT_TRUE(held["held_out"].get<bool>());
  EXPECT_NEAR(held["predicted"].get<double>() / lr_opt(1e9, 1.6e10), 1.0, 0.05);
  EXPECT_NEAR(held["optimum"].get<double>() / lr_opt(1e9, 1.6e10), 1.0, 0.05);
  // Power Lines: tau = B / (lr_opt lambda D) at each optimum.
  const auto& cell = lr["cells"][0];
  EXPECT_NEAR(cell["timescale"].get<double>(),
              131072.0 / (cell["optimum"].get<double>() * 0.1 * 1e9), 1e-6);
  EXPECT_TRUE(lr.contains("timescale"));
  // The plots' data: each cell's optimum against C, and the loss surface of the cell of most
  // compute (all 70 of its runs, lr x batch).
  const std::string optimum = testing::read_file(dir.path("fit/lr_optimum.dat"));
  EXPECT_EQ(std::count(optimum.begin(), optimum.end(), '\n'), 1 + 9) << optimum;
  const std::string surface = testing::read_file(dir.path("fit/loss_surface.dat"));
  EXPECT_EQ(std::count(surface.begin(), surface.end(), '\n'), 1 + 70);
}

TEST(HyperparameterLaws, EdgeOptimaAreLeftOutAndASweepThatVariesNothingIsRefused) {
  testing::TempDir dir;
  // A learning-rate grid of 0.08 .. 0.32: above every optimum but the smallest model's.
  const std::string narrow = write_sweep(dir, 0, /*narrow=*/true);
  std::vector<std::string> warnings;
  std::vector<Point> points;
  {
    std::vector<std::string> ignored;
    points = read_csv(narrow, ignored);
  }
  const auto cells = optimum_cells(points, "lr", warnings);
  EXPECT_LT(cells.size(), 9u);
  ASSERT_FALSE(warnings.empty());
  EXPECT_NE(warnings.front().find("at an edge of its grid; left out"), std::string::npos)
      << warnings.front();
  EXPECT_NE(warnings.front().find("runs: r"), std::string::npos) << warnings.front();

  // One learning rate and one batch everywhere: nothing to fit.
  const std::string flat = dir.path("flat.csv");
  std::ofstream(flat)
      << "run,N,D,lr,batch,loss\na,1e8,1e9,0.01,65536,3.0\nb,3e8,1e9,0.01,65536,2.9\n";
  FitCommand c;
  c.inputs = {flat};
  c.law = "hyperparameters";
  c.out_dir = dir.path("flatfit");
  c.plots = false;
  try {
    run_fit(c);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vary neither the learning rate"), std::string::npos)
        << e.what();
  }
}

TEST(HyperparameterLaws, ABatchGridBelowEveryOptimumLeavesTheLearningRateLaw) {
  // Every cell's best batch is the grid's largest: the batch law cannot be fitted, which is a
  // warning naming it (and fit.json's not_fitted), while the learning rate's law still comes out.
  testing::TempDir dir;
  const nlohmann::json j = fit_json(write_sweep(dir, 0, false, /*small_batches=*/true), dir, 0, 0);
  ASSERT_EQ(j["hyperparameters"].size(), 1u);
  EXPECT_EQ(j["hyperparameters"][0]["hyperparameter"], "lr");
  EXPECT_EQ(j["not_fitted"], nlohmann::json::array({"batch"}));
  bool warned = false;
  for (const auto& w : j["warnings"])
    warned |= w.get<std::string>().find("batch: no cell has its optimum inside its grid") !=
              std::string::npos;
  EXPECT_TRUE(warned) << j["warnings"].dump();
}

}  // namespace
}  // namespace ladder::scaling
