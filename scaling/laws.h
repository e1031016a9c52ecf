// The scaling laws `ladder fit` knows, each as a predictor of log-loss with the variables the
// optimiser moves, the grid it starts from, and the parameters reported under their names in the
// law's formula.
//
//   chinchilla  L = E + A / N^alpha + B / D^beta                         (Hoffmann et al. 2022)
//               fitted as log L = LSE(a - alpha log N, b - beta log D, e), A = e^a, B = e^b, E =
//               e^e
//   parscale    L = E + (A 1e9 / (N (k ln P + 1)))^alpha                 (Chen et al. 2025,
//   ParScale)
//               fitted as log L = LSE(alpha (a + ln 1e9 - log N - log(k ln P + 1)), e), k = e^kappa
//   kaplan-n    L = (N_c / N)^alpha_N                                     (Kaplan et al. 2020)
//   kaplan-c    L = (C_c / C)^alpha_C                                     (Kaplan et al. 2020)
//   routed      log L = a log N + b log Ê + c log N log Ê + d             (Clark et al. 2022)
//               with their saturating transform of the expert count,
//               1/Ê = 1 / (E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max, so Ê(1) = E_start and
//               Ê -> E_max as E grows; N = active non-embedding parameters (the dense model the
//               routed one is built on); E_start = e^s, E_max = E_start + e^m.
//   fine-grained  L = c + (g / G^gamma + a) / N^alpha + b / D^beta     (Krajewski et al. 2024)
//               G the experts' granularity, N active non-embedding parameters; fitted as
//               log L = LSE(LSE(lg - gamma log G, la) - alpha log N, lb - beta log D, lc)
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "scaling/points.h"

namespace ladder::scaling {

// The points as fp64 columns of natural logs: the rows of one fit.
struct Features {
  std::vector<double> log_N, log_D, log_C, log_P, log_E, log_loss;
  std::vector<double> log_N_active, log_G;
  std::vector<std::vector<double>> mixture;  // each point's mixture weights (scaling/mixture.h)
  int64_t size() const { return static_cast<int64_t>(log_loss.size()); }
  Features select(const std::vector<int64_t>& rows) const;  // a resample or a subset
};

// A law is plain arithmetic per point, with its gradient written out: L-BFGS then spends its time
// in the optimiser rather than in building autograd graphs over a few thousand numbers.
struct Law {
  std::string name;
  std::string formula;
  std::vector<std::string> needs;      // point quantities: "N", "N_active", "D", "C", "P", "E", "G"
  std::vector<std::string> variables;  // what L-BFGS moves
  std::vector<std::vector<double>> grid;  // starting values, one axis per variable
  // Predicted log-loss of point i; when `grad` is not null, adds nothing and writes
  // d(prediction)/d(theta) into grad[0 .. variables.size()).
  std::function<double(const double* theta, const Features& x, int64_t i, double* grad)> log_loss;
  // The formula's parameters from the variables, in the formula's names.
  std::function<std::vector<std::pair<std::string, double>>(const std::vector<double>& theta)>
      parameters;
};

const Law& law_named(const std::string& name);  // throws ladder::Error naming the known laws
std::vector<std::string> law_names();

// The columns a law needs, checked: a point lacking one is an error naming the quantity. C is
// taken as 6 N D where missing (Kaplan et al. 2020), N_active as N (a dense model).
Features features(const std::vector<Point>& points, const Law& law);

}  // namespace ladder::scaling
