// The fitter against synthetic data drawn from known laws, with noise and outliers.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "core/error.h"
#include "scaling/fit.h"

namespace ladder::scaling {
namespace {

// Hoffmann et al. 2022's fitted values (their eq. 10).
constexpr double kE = 1.69, kA = 406.4, kB = 410.7, kAlpha = 0.34, kBeta = 0.28;

double chinchilla(double N, double D) {
  return kE + kA / std::pow(N, kAlpha) + kB / std::pow(D, kBeta);
}

// 8 sizes x 8 token counts, 1% multiplicative noise, and `outliers` points 30% too high.
std::vector<Point> chinchilla_points(int outliers, uint64_t seed = 1) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> noise(0.0, 0.01);
  std::vector<Point> points;
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) {
      Point p;
      p.N = 1e7 * std::pow(10.0, i * 3.0 / 7), p.D = 1e9 * std::pow(10.0, j * 3.0 / 7);
      p.loss = chinchilla(p.N, p.D) * std::exp(noise(gen));
      p.run = "r" + std::to_string(i) + "_" + std::to_string(j);
      points.push_back(p);
    }
  for (int k = 0; k < outliers; ++k)
    points[static_cast<size_t>(7 + 13 * k) % points.size()].loss *= 1.3;
  return points;
}

double param(const FitResult& r, const std::string& name) {
  for (const auto& [n, v] : r.parameters)
    if (n == name) return v;
  return std::nan("");
}

FitResult fit(const std::string& name, const std::vector<Point>& points, FitOptions o = {}) {
  const Law& law = law_named(name);
  return fit_law(law, features(points, law), o);
}

TEST(Fit, ChinchillaRecoversKnownParametersWhereLeastSquaresIsPulledAway) {
  const auto points = chinchilla_points(4);
  const FitResult huber = fit("chinchilla", points);
  EXPECT_NEAR(param(huber, "alpha"), kAlpha, 0.03);
  EXPECT_NEAR(param(huber, "beta"), kBeta, 0.03);
  EXPECT_NEAR(param(huber, "E"), kE, 0.06);
  // A delta larger than every residual makes the Huber loss least squares: the four outliers pull
  // that fit further from the truth.
  FitOptions l2;
  l2.huber_delta = 10;
  const FitResult squares = fit("chinchilla", points, l2);
  auto miss = [](const FitResult& r) {
    return std::abs(param(r, "alpha") - kAlpha) + std::abs(param(r, "beta") - kBeta) +
           std::abs(param(r, "E") - kE);
  };
  EXPECT_LT(miss(huber), 0.5 * miss(squares))
      << "least squares: alpha " << param(squares, "alpha") << " beta " << param(squares, "beta")
      << " E " << param(squares, "E");
  // Without noise or outliers the optimum is the truth.
  std::vector<Point> clean = chinchilla_points(0);
  for (auto& p : clean)
    p.loss = chinchilla(p.N, p.D);
  const FitResult exact = fit("chinchilla", clean);
  EXPECT_NEAR(param(exact, "alpha"), kAlpha, 1e-3);
  EXPECT_NEAR(param(exact, "beta"), kBeta, 1e-3);
  EXPECT_NEAR(param(exact, "E"), kE, 2e-3);
  EXPECT_NEAR(param(exact, "A") / kA, 1.0, 0.02);
  EXPECT_NEAR(param(exact, "B") / kB, 1.0, 0.02);
}

// A real ladder's shape: 4 sizes of 190 M - 1.3 B at 4 token counts each, losses near 3 with 0.3%
// noise. The objective is flat near its minimum (a few 1e-5 in all): a stop on the change of the
// objective alone ends far from it. The fit must reach the minimum that every start finds.
TEST(Fit, TheRobustFitReachesTheMinimumOfAFlatObjective) {
  std::mt19937_64 gen(11);
  std::normal_distribution<double> noise(0.0, 0.003);
  std::vector<Point> points;
  for (double N : {1.9e8, 3.7e8, 7.6e8, 1.3e9})
    for (double tokens_per_parameter : {5.0, 10.0, 20.0, 40.0}) {
      Point p;
      p.N = N, p.D = tokens_per_parameter * N;
      p.loss = chinchilla(p.N, p.D) * std::exp(noise(gen));
      points.push_back(p);
    }
  const FitResult r = fit("chinchilla", points);
  FitOptions more;
  more.starts = 512;  // 8 times the default's starts (all 4,500 find the same minimum, 20 s)
  const FitResult all = fit("chinchilla", points, more);
  EXPECT_LT(r.gradient_norm, 1e-8) << "objective " << r.objective;
  EXPECT_LE(r.objective, all.objective * (1 + 1e-9));
  for (const char* name : {"E", "alpha", "beta"})
    EXPECT_NEAR(param(r, name) / param(all, name), 1.0, 1e-4) << name;
}

TEST(Fit, SameInputSameOutputAndIntervalsCoverTheTruth) {
  const auto points = chinchilla_points(0, 7);
  FitOptions o;
  o.bootstrap = 100;
  o.seed = 3;
  const FitResult a = fit("chinchilla", points, o), b = fit("chinchilla", points, o);
  EXPECT_EQ(a.theta, b.theta);  // bitwise
  EXPECT_EQ(a.bootstrap_theta, b.bootstrap_theta);
  ASSERT_EQ(a.bootstrap_theta.size(), 100u);
  for (const auto& [name, truth] :
       std::vector<std::pair<std::string, double>>{{"alpha", kAlpha}, {"beta", kBeta}, {"E", kE}}) {
    const Interval i = a.intervals.at(name);
    EXPECT_LT(i.low, truth) << name;
    EXPECT_GT(i.high, truth) << name;
    EXPECT_LT(i.low, param(a, name));
    EXPECT_GT(i.high, param(a, name));
  }
  // Another seed resamples differently.
  o.seed = 4;
  EXPECT_NE(fit("chinchilla", points, o).bootstrap_theta, a.bootstrap_theta);
}

TEST(Fit, ParScaleRecoversKnownParametersDespiteOutliers) {
  // L = E + (A 1e9 / (N (k ln P + 1)))^alpha
  const double E = 1.7, A = 2.5, alpha = 0.25, k = 0.4;
  std::mt19937_64 gen(5);
  std::normal_distribution<double> noise(0.0, 0.003);
  std::vector<Point> points;
  for (int i = 0; i < 6; ++i)
    for (double P : {1.0, 2.0, 4.0, 8.0}) {
      Point p;
      p.N = 1e8 * std::pow(2.0, i), p.P = P;
      p.loss =
          (E + std::pow(A * 1e9 / (p.N * (k * std::log(P) + 1)), alpha)) * std::exp(noise(gen));
      points.push_back(p);
    }
  points[5].loss *= 1.25, points[17].loss *= 0.8;
  const FitResult r = fit("parscale", points);
  EXPECT_NEAR(param(r, "E"), E, 0.08);
  EXPECT_NEAR(param(r, "alpha"), alpha, 0.03);
  EXPECT_NEAR(param(r, "k"), k, 0.05);
  EXPECT_NEAR(param(r, "A") / A, 1.0, 0.35);
}

// Clark et al. 2022's saturating transform of the expert count.
double saturated_experts(double E, double start, double max) {
  return 1.0 / (1.0 / (E - 1.0 + 1.0 / (1.0 / start - 1.0 / max)) + 1.0 / max);
}

TEST(Fit, KaplanAndRoutedFormsRecoverExactData) {
  std::vector<Point> kaplan, routed;
  const double start = 1.8, max = 300;
  EXPECT_NEAR(saturated_experts(1, start, max), start, 1e-12);  // Ê(1) = E_start
  for (int i = 0; i < 10; ++i) {
    Point p;
    p.N = 1e6 * std::pow(3.0, i);
    p.loss = std::pow(8.8e13 / p.N, 0.076);  // Kaplan et al. 2020's L(N)
    kaplan.push_back(p);
    for (double experts : {1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0}) {
      Point q = p;
      q.E = experts;
      q.N_active = p.N, q.N = p.N * experts;  // the law reads the active (dense-base) size
      const double log_hat = std::log(saturated_experts(experts, start, max));
      q.loss =
          std::exp(-0.08 * std::log(p.N) - 0.1 * log_hat + 0.003 * std::log(p.N) * log_hat + 2.5);
      routed.push_back(q);
    }
  }
  const FitResult n = fit("kaplan-n", kaplan);
  EXPECT_NEAR(param(n, "alpha_N"), 0.076, 1e-6);
  EXPECT_NEAR(param(n, "N_c") / 8.8e13, 1.0, 1e-4);
  for (auto& p : kaplan)
    p.C = 6 * p.N * 1e10;  // L(C) on the same numbers: alpha_C = alpha_N here
  const FitResult c = fit("kaplan-c", kaplan);
  EXPECT_NEAR(param(c, "alpha_C"), 0.076, 1e-6);
  const FitResult r = fit("routed", routed);
  EXPECT_NEAR(param(r, "a"), -0.08, 1e-4);
  EXPECT_NEAR(param(r, "b"), -0.1, 1e-3);
  EXPECT_NEAR(param(r, "c"), 0.003, 1e-4);
  EXPECT_NEAR(param(r, "d"), 2.5, 2e-3);
  EXPECT_NEAR(param(r, "E_start") / start, 1.0, 0.02);
  EXPECT_NEAR(param(r, "E_max") / max, 1.0, 0.05);
}

// Krajewski et al. 2024: L = c + (g / G^gamma + a) / N^alpha + b / D^beta, 0.5% noise.
TEST(Fit, FineGrainedMoeLawRecoversKnownParameters) {
  const double a = 18.1, g = 2.7, gamma = 0.58, alpha = 0.115, b = 30.8, beta = 0.147, c = 0.47;
  std::mt19937_64 gen(9);
  std::normal_distribution<double> noise(0.0, 0.005);
  std::vector<Point> points;
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 5; ++j)
      for (double G : {1.0, 2.0, 4.0, 8.0, 16.0}) {
        Point p;
        p.N_active = 1e7 * std::pow(10.0, i * 3.0 / 5), p.N = 8 * p.N_active;
        p.D = 1e9 * std::pow(10.0, j * 2.0 / 4), p.G = G;
        p.loss = (c + (g / std::pow(G, gamma) + a) / std::pow(p.N_active, alpha) +
                  b / std::pow(p.D, beta)) *
                 std::exp(noise(gen));
        points.push_back(p);
      }
  const FitResult r = fit("fine-grained", points);
  EXPECT_NEAR(param(r, "alpha"), alpha, 0.01);
  EXPECT_NEAR(param(r, "beta"), beta, 0.015);
  EXPECT_NEAR(param(r, "gamma"), gamma, 0.1);
  EXPECT_NEAR(param(r, "c"), c, 0.1);
  EXPECT_NEAR(param(r, "g") / g, 1.0, 0.3);
  // Without a granularity (a dense run) the law refuses the point by name.
  points[4].G = kMissing;
  try {
    fit("fine-grained", points);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("law fine-grained needs G > 0"), std::string::npos)
        << e.what();
  }
}

TEST(Fit, TooFewPointsOrMissingQuantitiesAreErrors) {
  std::vector<Point> few = chinchilla_points(0);
  few.resize(5);
  EXPECT_THROW(fit("chinchilla", few), Error);
  std::vector<Point> no_D = chinchilla_points(0);
  no_D[3].D = kMissing;
  try {
    fit("chinchilla", no_D);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("law chinchilla needs D > 0"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(law_named("chinchila"), Error);
}

TEST(Fit, AllocationFollowsHoffmannEquationFour) {
  // a = beta / (alpha + beta), and N_opt D_opt = C / 6 at every budget.
  const std::vector<double> theta{std::log(kA), std::log(kB), std::log(kE), kAlpha, kBeta};
  const Allocation a = chinchilla_allocation(theta);
  EXPECT_NEAR(a.a, kBeta / (kAlpha + kBeta), 1e-12);
  EXPECT_NEAR(a.b, kAlpha / (kAlpha + kBeta), 1e-12);
  for (double C : {1e18, 1e21, 1e24}) {
    EXPECT_NEAR(a.N_opt(C) * a.D_opt(C) / (C / 6), 1.0, 1e-9);
    // The loss along the constraint N D = C/6 is smallest at N_opt.
    auto loss = [&](double N) { return chinchilla(N, C / 6 / N); };
    EXPECT_LT(loss(a.N_opt(C)), loss(1.05 * a.N_opt(C)));
    EXPECT_LT(loss(a.N_opt(C)), loss(0.95 * a.N_opt(C)));
  }
}

TEST(Isoflop, ApproachTwoRecoversTheExponents) {
  // Published-style isoFLOP data: one point per model at each of 4 budgets, on N D = C / 6.
  std::vector<Point> points;
  const double expected_a = kBeta / (kAlpha + kBeta);
  for (double C : {1e18, 1e19, 1e20, 1e21}) {
    const double centre =
        chinchilla_allocation({std::log(kA), std::log(kB), std::log(kE), kAlpha, kBeta}).N_opt(C);
    for (int i = -4; i <= 4; ++i) {
      Point p;
      p.N = centre * std::pow(1.5, i), p.D = C / 6 / p.N, p.C = C;
      p.loss = chinchilla(p.N, p.D);
      p.run = std::to_string(C) + "/" + std::to_string(i);
      points.push_back(p);
    }
  }
  std::vector<std::string> warnings;
  const IsoflopResult r = isoflop_profiles(points, warnings);
  EXPECT_FALSE(r.interpolated);
  ASSERT_EQ(r.budgets.size(), 4u);
  // The parabola is an approximation of the profile: close, not exact.
  EXPECT_NEAR(r.a, expected_a, 0.02);
  EXPECT_NEAR(r.b, 1 - expected_a, 0.02);
  EXPECT_TRUE(warnings.empty());
}

TEST(Isoflop, LossCurvesAreInterpolatedAtBudgets) {
  // Training runs: 7 model sizes, each a curve of 12 evaluations over tokens.
  std::vector<Point> points;
  for (int i = 0; i < 7; ++i)
    for (int j = 1; j <= 12; ++j) {
      Point p;
      p.N = 3e7 * std::pow(2.0, i), p.D = 2e8 * std::pow(1.6, j), p.C = 6 * p.N * p.D;
      p.loss = chinchilla(p.N, p.D);
      p.run = "size" + std::to_string(i);
      points.push_back(p);
    }
  std::vector<std::string> warnings;
  const IsoflopResult r = isoflop_profiles(points, warnings);
  EXPECT_TRUE(r.interpolated);
  EXPECT_GE(r.budgets.size(), 2u);
  EXPECT_NEAR(r.a, kBeta / (kAlpha + kBeta), 0.1);
}

TEST(Transfer, FindsTheOptimumOfEachWidth) {
  std::vector<Point> points;
  const std::map<double, double> optimum{{128, 1e-2}, {256, 1.1e-2}, {512, 0.9e-2}};
  for (const auto& [width, best] : optimum)
    for (int i = -3; i <= 3; ++i) {
      Point p;
      p.width = width, p.lr = best * std::pow(2.0, i), p.D = 1e9;
      p.loss = 3.0 + 0.05 * std::pow(std::log(p.lr / best), 2) + 1e3 / width;
      p.run = std::to_string(width) + "/" + std::to_string(i);
      p.attributes["weight_decay"] = std::to_string(p.lr * 10);  // the same sweep, as a wd one
      points.push_back(p);
    }
  std::vector<std::string> warnings;
  const Transfer t = transfer(points, "lr", warnings);
  ASSERT_EQ(t.curves.size(), 3u);
  for (const auto& c : t.curves)
    EXPECT_NEAR(c.value_opt / optimum.at(c.at), 1.0, 1e-9) << c.at;
  EXPECT_NEAR(t.spread, 1.1 / 0.9, 1e-9);
  // Any run attribute: here weight_decay = 10 x lr.
  const Transfer wd = transfer(points, "weight_decay", warnings);
  ASSERT_EQ(wd.curves.size(), 3u);
  for (const auto& c : wd.curves)
    EXPECT_NEAR(c.value_opt / (10 * optimum.at(c.at)), 1.0, 1e-5) << c.at;
  // A diverged run at the largest value does not bend the parabola: it lies outside the window of
  // the best point and two neighbours on each side.
  for (auto& p : points)
    if (p.width == 128 && p.lr > 7e-2) p.loss = 100.0;
  warnings.clear();
  const Transfer robust = transfer(points, "lr", warnings);
  ASSERT_EQ(robust.curves.size(), 3u) << (warnings.empty() ? "" : warnings[0]);
  EXPECT_NEAR(robust.curves[0].value_opt / 1e-2, 1.0, 1e-9);
  // A width whose sweep keeps improving at the edge has no optimum inside it: warned, left out.
  for (auto& p : points)
    if (p.width == 512) p.loss = 3.0 - p.lr;
  warnings.clear();
  const Transfer partial = transfer(points, "lr", warnings);
  EXPECT_EQ(partial.curves.size(), 2u);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("width 512 has no loss minimum inside its values"), std::string::npos)
      << warnings[0];
  // A run without the hyperparameter is an error naming it.
  points[0].attributes.erase("weight_decay");
  EXPECT_THROW(transfer(points, "weight_decay", warnings), Error);
}

TEST(Transfer, AlongDepthGroupsByTheLayersAtOneWidth) {
  // One width, four depths, each with its own optimum: along depth each depth's optimum comes
  // back (grouped by width the 28 runs would be one sweep).
  std::vector<Point> points;
  const std::map<double, double> optimum{{2, 8e-3}, {4, 6e-3}, {8, 4e-3}, {16, 2e-3}};
  for (const auto& [depth, best] : optimum)
    for (int i = -3; i <= 3; ++i) {
      Point p;
      p.width = 64, p.lr = best * std::pow(2.0, i), p.D = 1e9;
      p.loss = 2.0 + 0.04 * std::pow(std::log(p.lr / best), 2) - 0.01 * depth;
      p.run = "L" + std::to_string(static_cast<int>(depth)) + "/" + std::to_string(i);
      p.attributes["depth"] = std::to_string(static_cast<int>(depth));
      points.push_back(p);
    }
  std::vector<std::string> warnings;
  const Transfer t = transfer(points, "lr", warnings, "depth");
  EXPECT_EQ(t.axis, "depth");
  ASSERT_EQ(t.curves.size(), 4u);
  for (const auto& c : t.curves) {
    EXPECT_EQ(c.value.size(), 7u) << c.at;
    EXPECT_NEAR(c.value_opt / optimum.at(c.at), 1.0, 1e-9) << c.at;
  }
  EXPECT_NEAR(t.spread, 4.0, 1e-9);
  // A run without a depth (a trace from before the attribute, a CSV without the column) names
  // itself; an unknown axis is refused.
  points[3].attributes.erase("depth");
  try {
    transfer(points, "lr", warnings, "depth");
    ADD_FAILURE() << "no error for a run without a depth";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(points[3].run), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("needs a depth"), std::string::npos) << e.what();
  }
  EXPECT_THROW(transfer(points, "lr", warnings, "heads"), Error);
}

TEST(Parabola, ExactOnAParabolaAndRefusesTwoPoints) {
  double c0, c1, c2;
  ASSERT_TRUE(fit_parabola({1, 2, 3, 4}, {6, 11, 18, 27}, c0, c1, c2));  // 3 + 2x + x^2
  EXPECT_NEAR(c0, 3, 1e-9);
  EXPECT_NEAR(c1, 2, 1e-9);
  EXPECT_NEAR(c2, 1, 1e-9);
  EXPECT_FALSE(fit_parabola({1, 1, 2}, {1, 1, 2}, c0, c1, c2));
}

}  // namespace
}  // namespace ladder::scaling
