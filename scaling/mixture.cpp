#include "scaling/mixture.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <sstream>

#include "core/error.h"

namespace ladder::scaling {
namespace {

double exponent(const double* t, const std::vector<double>& r) {
  double s = 0;
  for (size_t j = 0; j + 1 < r.size(); ++j)
    s += t[2 + j] * r[j];
  return s;
}

double mean_loss(const std::vector<std::vector<double>>& laws, const std::vector<double>& r) {
  double sum = 0;
  for (const auto& theta : laws)
    sum += mixture_loss(theta, r);
  return sum / static_cast<double>(laws.size());
}

// Every point of the simplex lattice of `steps` per unit within `radius` (in lattice steps, per
// coordinate) of `centre` (all of it when centre is empty); calls visit(r).
template <class Visit>
void lattice(size_t m, int steps, const std::vector<double>& centre, int radius, Visit visit) {
  std::vector<int> counts(m, 0);
  std::vector<double> r(m);
  auto near = [&](size_t j, int c) {
    return centre.empty() || std::abs(c - centre[j] * steps) <= radius;
  };
  std::function<void(size_t, int)> fill = [&](size_t j, int left) {
    if (j + 1 == m) {
      if (!near(j, left)) return;
      counts[j] = left;
      for (size_t k = 0; k < m; ++k)
        r[k] = static_cast<double>(counts[k]) / steps;
      visit(r);
      return;
    }
    for (int c = 0; c <= left; ++c) {
      if (!near(j, c)) continue;
      counts[j] = c;
      fill(j + 1, left - c);
    }
  };
  fill(0, steps);
}

}  // namespace

Law mixture_law(const std::vector<std::string>& sources) {
  const size_t m = sources.size();
  std::vector<std::string> variables = {"lc", "lk"};
  std::vector<std::vector<double>> grid = {{-1.0, 0.0, 0.5, 1.0, 1.5}, {-3.0, -1.5, 0.0, 1.0}};
  for (size_t j = 0; j + 1 < m; ++j) {
    variables.push_back("t_" + sources[j]);
    grid.push_back({-3.0, -1.0, 0.0, 1.0, 3.0});
  }
  std::string formula = "L = c + k exp(";
  for (size_t j = 0; j + 1 < m; ++j)
    formula += (j ? " + t_" : "t_") + sources[j] + " r_" + sources[j];
  formula += "), t_" + sources.back() + " = 0 (the reference source)";
  return Law{"mixture",
             formula,
             {},
             variables,
             grid,
             [m](const double* t, const Features& x, int64_t i, double* grad) {
               const std::vector<double>& r = x.mixture[i];
               const double a = t[0], b = t[1] + exponent(t, r);
               const double top = std::max(a, b);
               const double ea = std::exp(a - top), eb = std::exp(b - top);
               const double wa = ea / (ea + eb), wb = eb / (ea + eb);
               if (grad) {
                 grad[0] = wa, grad[1] = wb;
                 for (size_t j = 0; j + 1 < m; ++j)
                   grad[2 + j] = wb * r[j];
               }
               return top + std::log(ea + eb);
             },
             [sources](const std::vector<double>& t) {
               std::vector<std::pair<std::string, double>> p = {{"c", std::exp(t[0])},
                                                                {"k", std::exp(t[1])}};
               for (size_t j = 0; j + 1 < sources.size(); ++j)
                 p.emplace_back("t_" + sources[j], t[2 + j]);
               return p;
             }};
}

double mixture_loss(const std::vector<double>& theta, const std::vector<double>& r) {
  return std::exp(theta[0]) + std::exp(theta[1] + exponent(theta.data(), r));
}

std::vector<double> best_mixture(const std::vector<std::vector<double>>& laws, size_t m) {
  std::vector<double> best;
  double best_loss = INFINITY;
  auto consider = [&](const std::vector<double>& r) {
    const double l = mean_loss(laws, r);
    if (l < best_loss) best_loss = l, best = r;
  };
  if (m == 1) return {1.0};
  if (m <= 3) {
    lattice(m, 200, {}, 0, consider);
  } else {
    std::mt19937_64 rng(12345);
    std::exponential_distribution<double> e(1.0);
    std::vector<double> r(m);
    for (int s = 0; s < 20000; ++s) {
      double sum = 0;
      for (auto& x : r)
        sum += (x = e(rng));
      for (auto& x : r)
        x /= sum;
      consider(r);
    }
    for (size_t j = 0; j < m; ++j) {  // the vertices, where optima of this law often are
      std::vector<double> v(m, 0.0);
      v[j] = 1;
      consider(v);
    }
  }
  if (m <= 6) {
    const std::vector<double> centre = best;
    lattice(m, 1000, centre, 6, consider);
  }
  return best;
}

std::vector<std::pair<std::string, double>> parse_mixture(const std::string& text,
                                                          const std::string& where) {
  std::vector<std::pair<std::string, double>> out;
  std::istringstream words(text);
  std::string word;
  while (words >> word) {
    const size_t eq = word.rfind('=');
    char* end = nullptr;
    const double w = eq == std::string::npos ? NAN : std::strtod(word.c_str() + eq + 1, &end);
    if (eq == std::string::npos || eq == 0 || !end || *end != '\0' || !(w >= 0))
      throw Error(where, "data_mixture: expected \"NAME=WEIGHT ...\"; got \"" + text + "\"");
    out.emplace_back(word.substr(0, eq), w);
  }
  return out;
}

}  // namespace ladder::scaling
