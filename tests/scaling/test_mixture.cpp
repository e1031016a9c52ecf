// The data-mixing law (scaling/mixture.h) against mixtures drawn from known laws, and
// `ladder fit --law mixture` on traces written by the trainer's own Trace writer.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/format.h"
#include "scaling/fit.h"
#include "scaling/fit_command.h"
#include "scaling/mixture.h"
#include "test_util.h"
#include "trainer/run/trace.h"

namespace ladder::scaling {
namespace {

const std::vector<std::string> kSources = {"news", "fiction", "learned"};

// Two sets' true laws, as variables (log c, log k, t_news, t_fiction; t_learned = 0): news
// gains from news (t < 0 lowers the loss), fiction from fiction.
const std::vector<std::vector<double>> kTruth = {{std::log(2.0), std::log(0.8), -1.2, 0.3},
                                                 {std::log(1.8), std::log(0.9), 0.4, -1.5}};

// 12 mixtures spread over the simplex (vertices, edges, inside).
std::vector<std::vector<double>> mixtures() {
  return {{1, 0, 0},
          {0, 1, 0},
          {0, 0, 1},
          {0.5, 0.5, 0},
          {0.5, 0, 0.5},
          {0, 0.5, 0.5},
          {1. / 3, 1. / 3, 1. / 3},
          {0.7, 0.2, 0.1},
          {0.2, 0.7, 0.1},
          {0.1, 0.2, 0.7},
          {0.4, 0.4, 0.2},
          {0.25, 0.15, 0.6}};
}

Features synthetic(const std::vector<double>& truth, double noise, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> e(0.0, noise);
  Features x;
  for (const auto& r : mixtures()) {
    x.mixture.push_back(r);
    x.log_loss.push_back(std::log(mixture_loss(truth, r)) + e(gen));
  }
  return x;
}

TEST(MixtureLaw, RecoversKnownParametersWithinTheirIntervals) {
  const Law law = mixture_law(kSources);
  ASSERT_EQ(law.variables.size(), 4u);
  FitOptions options;
  options.bootstrap = 200;
  options.starts = 0;
  for (size_t s = 0; s < kTruth.size(); ++s) {
    const FitResult r = fit_law(law, synthetic(kTruth[s], 0.002, 3 + s), options);
    const std::vector<std::pair<std::string, double>> truth = law.parameters(kTruth[s]);
    for (const auto& [name, value] : truth) {
      const Interval i = r.intervals.at(name);
      EXPECT_LE(i.low, value) << name << " of set " << s;
      EXPECT_GE(i.high, value) << name << " of set " << s;
    }
    // An unseen mixture is predicted to within the noise.
    const std::vector<double> unseen = {0.6, 0.3, 0.1};
    EXPECT_NEAR(mixture_loss(r.theta, unseen) / mixture_loss(kTruth[s], unseen), 1.0, 0.01);
  }
}

TEST(MixtureLaw, TheRecommendedMixtureIsTheMinimumOnTheSimplex) {
  const std::vector<double> best = best_mixture(kTruth, 3);
  ASSERT_EQ(best.size(), 3u);
  EXPECT_NEAR(best[0] + best[1] + best[2], 1.0, 1e-12);
  auto mean = [](const std::vector<double>& r) {
    return (mixture_loss(kTruth[0], r) + mixture_loss(kTruth[1], r)) / 2;
  };
  std::mt19937_64 gen(7);
  std::exponential_distribution<double> e(1.0);
  for (int i = 0; i < 20000; ++i) {
    std::vector<double> r = {e(gen), e(gen), e(gen)};
    const double sum = r[0] + r[1] + r[2];
    for (auto& v : r)
      v /= sum;
    ASSERT_LE(mean(best), mean(r) + 1e-9);
  }
  // Each set alone wants its own source (its t is the most negative): a vertex.
  EXPECT_NEAR(best_mixture({kTruth[0]}, 3)[0], 1.0, 1e-9);
  EXPECT_NEAR(best_mixture({kTruth[1]}, 3)[1], 1.0, 1e-9);
  // More sources than the lattice covers: the seeded search, the same minimum for a vertex.
  const std::vector<double> four = {std::log(2.0), 0.0, 0.5, -2.0, 0.1};
  EXPECT_NEAR(best_mixture({four}, 4)[1], 1.0, 1e-9);
}

TEST(MixtureLaw, ParsesTheTraceAttribute) {
  const auto m = parse_mixture("news=0.5 fiction=0.25 learned=0.25", "t");
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[1].first, "fiction");
  EXPECT_EQ(m[1].second, 0.25);
  EXPECT_THROW(parse_mixture("news=-1", "t"), Error);
  EXPECT_THROW(parse_mixture("news", "t"), Error);
  EXPECT_THROW(parse_mixture("=0.5", "t"), Error);
}

// A run whose trace evaluated both sets at the end of training on mixture r.
void write_mixture_run(const std::string& dir, const std::vector<double>& r,
                       bool with_sets = true) {
  std::filesystem::create_directories(dir);
  std::string mixture;
  for (size_t j = 0; j < r.size(); ++j)
    mixture += (j ? " " : "") + kSources[j] + "=" + shortest_float(r[j]);
  Trace trace(dir + "/trace.h5",
              {{"N", int64_t{1000000}},
               {"data_mixture", mixture},
               {"eval_sets", std::string(with_sets ? "news fiction" : "")},
               {"recipe", std::string("[run]\n")}},
              -1, 1, {},
              with_sets ? std::vector<std::string>{"news", "fiction"} : std::vector<std::string>{});
  EvalRecord e{100, 100000, 6e11, 3.0};
  if (with_sets)
    e.set_loss = {mixture_loss(kTruth[0], r), mixture_loss(kTruth[1], r)},
    e.set_bytes_per_token = {1.0, 1.0};
  trace.append(e);
}

TEST(MixtureLaw, FitCommandFitsEachSetPredictsTheHeldOutRunAndRecommends) {
  testing::TempDir dir;
  const auto ms = mixtures();
  for (size_t i = 0; i < ms.size(); ++i)
    write_mixture_run(dir.path("sweep/m" + std::string(i < 10 ? "0" : "") + std::to_string(i)),
                      ms[i]);
  FitCommand c;
  c.inputs = {dir.path("sweep")};
  c.law = "mixture";
  c.out_dir = dir.path("fit");
  c.holdout = 1;
  c.fit.bootstrap = 20;
  c.plots = false;
  ASSERT_EQ(run_fit(c), 0);
  std::ifstream in(dir.path("fit/fit.json"));
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["law"], "mixture");
  EXPECT_EQ(j["sources"], nlohmann::json(kSources));
  EXPECT_NEAR(j["sets"]["news"]["parameters"]["t_news"]["value"].get<double>(), -1.2, 1e-3);
  EXPECT_NEAR(j["sets"]["fiction"]["parameters"]["t_fiction"]["value"].get<double>(), -1.5, 1e-3);
  ASSERT_EQ(j["held_out"].size(), 1u);  // the last run: m11
  const auto& held = j["held_out"][0];
  for (const char* set : {"news", "fiction"})
    EXPECT_NEAR(held[set]["predicted"].get<double>() / held[set]["measured"].get<double>(), 1.0,
                1e-3);
  const auto& w = j["optimum"]["weights"];
  const std::vector<double> best = best_mixture(kTruth, 3);
  EXPECT_NEAR(w["news"]["value"].get<double>(), best[0], 0.01);
  EXPECT_NEAR(w["fiction"]["value"].get<double>(), best[1], 0.01);

  // --eval SET fits that set only; a run without a mixture or without the set is named.
  c.points.eval_set = "news";
  c.out_dir = dir.path("fit_news");
  ASSERT_EQ(run_fit(c), 0);
  write_mixture_run(dir.path("sweep/z_plain"), {0.2, 0.3, 0.5}, false);
  try {
    run_fit(c);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.where(), dir.path("sweep/z_plain/trace.h5"));
    EXPECT_NE(e.detail().find("has no eval set \"news\""), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ladder::scaling
