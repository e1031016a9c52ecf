// The fitter against synthetic data drawn from known laws, with noise and outliers.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>

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

TEST(Fit, ChinchillaRecoversKnownParametersDespiteOutliers) {
  const Law& law = law_named("chinchilla");
  const auto t0 = std::chrono::steady_clock::now();
  const FitResult r = fit_law(law, features(chinchilla_points(4), law), FitOptions{});
  std::printf("fit: %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  for (const auto& [n, v] : r.parameters) std::printf("%s = %g\n", n.c_str(), v);
  EXPECT_NEAR(param(r, "alpha"), kAlpha, 0.03);
  EXPECT_NEAR(param(r, "beta"), kBeta, 0.03);
  EXPECT_NEAR(param(r, "E"), kE, 0.1);
}

}  // namespace
}  // namespace ladder::scaling
namespace ladder::scaling {
TEST(FitBench, Thousand) {
  std::mt19937_64 gen(3);
  std::normal_distribution<double> noise(0.0, 0.01);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<Point> points;
  for (int i = 0; i < 1000; ++i) {
    Point p;
    p.N = 1e7 * std::pow(10.0, 3 * u(gen)), p.D = 1e9 * std::pow(10.0, 3 * u(gen));
    p.loss = (1.69 + 406.4 / std::pow(p.N, 0.34) + 410.7 / std::pow(p.D, 0.28)) * std::exp(noise(gen));
    points.push_back(p);
  }
  const Law& law = law_named("chinchilla");
  FitOptions o; o.bootstrap = std::atoi(getenv("BOOT"));
  const auto t0 = std::chrono::steady_clock::now();
  const FitResult r = fit_law(law, features(points, law), o);
  std::printf("fit+100 boot: %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  for (const auto& [n, v] : r.parameters) std::printf("%s = %g [%g, %g]\n", n.c_str(), v, r.intervals.at(n).low, r.intervals.at(n).high);
}
}
