// Fitting procedures behind `ladder fit`.
//
// fit_law is Hoffmann et al. 2022's Approach 3 for any law of laws.h: the Huber loss (delta 1e-3)
// of the log-loss residuals, summed over points (a mean shrinks the gradient with the point count
// and stops L-BFGS early), minimised by LibTorch's L-BFGS in fp64 with strong-Wolfe line search.
// Every point of the law's grid is scored, and L-BFGS runs from
// the best `starts` of them (0: from every grid point); the lowest objective wins, ties to the
// earlier start, so the same input gives the same output. Bootstrap: `bootstrap` resamples of the
// points with replacement (a seeded generator), each refitted from the point estimate; 95%
// intervals are the 2.5 and 97.5 percentiles.
//
// isoflop_profiles is Approach 2: per compute budget, a parabola of loss in log N, its minimum
// N*(C) (and the D there), then power laws N* ~ C^a and D* ~ C^b across budgets.
// transfer fits a parabola of loss in the log of a hyperparameter (learning rate, weight decay) per
// width, for muP transfer checks.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "scaling/laws.h"
#include "scaling/points.h"

namespace ladder::scaling {

struct FitOptions {
  double huber_delta = 1e-3;
  int64_t starts = 64;    // L-BFGS runs from the best grid points; 0: all of them
  int64_t bootstrap = 0;  // resamples
  uint64_t seed = 0;      // of the resampling
};

struct Interval {
  double low = 0, high = 0;
};

struct FitResult {
  std::vector<double> theta;  // the law's variables at the optimum
  double objective = 0;       // summed Huber loss there
  double gradient_norm = 0;   // the objective's gradient there (L2): how converged the fit is
  std::vector<std::pair<std::string, double>> parameters;  // in the formula's names
  int64_t points = 0, grid_points = 0, starts = 0;
  std::vector<std::vector<double>> bootstrap_theta;  // one per successful resample
  int64_t bootstrap_failed = 0;
  std::map<std::string, Interval> intervals;  // 95%, per parameter (with bootstrap)
};

FitResult fit_law(const Law& law, const Features& x, const FitOptions& options);

// The 2.5 and 97.5 percentiles of `values` (linear interpolation).
Interval percentile_interval(std::vector<double> values);

// Hoffmann et al. 2022, eq. 4: the compute-optimal allocation of a fitted Chinchilla law under
// C = 6 N D: N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b, a = beta / (alpha + beta),
// b = alpha / (alpha + beta), G = (alpha A / (beta B))^(1 / (alpha + beta)).
struct Allocation {
  double a = 0, b = 0, G = 0;
  double N_opt(double C) const;
  double D_opt(double C) const;
};
Allocation chinchilla_allocation(const std::vector<double>& theta);

struct IsoflopBudget {
  double C = 0;
  std::vector<double> N, D, loss;  // the models at this budget
  double c0 = 0, c1 = 0, c2 = 0;   // loss = c0 + c1 x + c2 x^2, x = ln N
  double N_opt = 0, D_opt = 0, loss_opt = 0;
};

struct IsoflopResult {
  std::vector<IsoflopBudget> budgets;  // those with a minimum inside their sizes
  double a = 0, log_N_coeff = 0;       // ln N* = a ln C + log_N_coeff
  double b = 0, log_D_coeff = 0;       // ln D* = b ln C + log_D_coeff
  bool interpolated = false;           // budgets from interpolated loss curves (traces)
};

// Budgets are the distinct C of the points (within 2%) when every run has one point (published
// isoFLOP data, --final-only); otherwise 8 log-spaced budgets at which each run's loss is
// interpolated linearly in log C, where at least 3 model sizes reach them.
IsoflopResult isoflop_profiles(const std::vector<Point>& points,
                               std::vector<std::string>& warnings);

// One width's (or depth's) sweep of a hyperparameter: final losses against its values, the
// parabola in the log of the value fitted around the best grid point, and the optimum it places.
struct TransferCurve {
  double at = 0;  // the width or the depth (Transfer::axis)
  std::vector<double> value, loss;
  double c0 = 0, c1 = 0, c2 = 0;  // loss = c0 + c1 x + c2 x^2, x = ln value, near the best point
  double value_opt = 0, loss_opt = 0;
};

struct Transfer {
  std::string hyperparameter;         // "lr" or "weight_decay"
  std::string axis;                   // "width" (d_model) or "depth" (layers)
  std::vector<TransferCurve> curves;  // widths (depths) with a minimum inside their values
  double spread = 0;                  // max optimum / min optimum across them
};

// The axes a transfer runs along: "width" (the trace's width, d_model) and "depth" (its depth, the
// layers).
const std::vector<std::string>& transfer_axes();

// Uses the last point of each run; points need the axis's value and the hyperparameter ("lr": the
// learning rate; otherwise a run attribute such as "weight_decay"). Each width's (depth's)
// parabola is fitted to its best grid point and up to two neighbours on each side (a diverged run
// far from the optimum does not bend it); one whose best value lies at an end of its grid has no
// optimum inside: warned and left out.
Transfer transfer(const std::vector<Point>& points, const std::string& hyperparameter,
                  std::vector<std::string>& warnings, const std::string& axis = "width");

// A bootstrap resample of whole runs (with replacement; a run drawn twice appears under two names),
// for procedures whose unit is a run or a loss curve rather than a point: isoFLOP profiles and
// learning-rate transfer. `state` advances.
std::vector<Point> resample_runs(const std::vector<Point>& points, uint64_t& state);

// Least squares y ~ rows · c (each row the regressors of one observation, a 1 for an intercept);
// false when the normal equations are singular.
bool least_squares(const std::vector<std::vector<double>>& rows, const std::vector<double>& y,
                   std::vector<double>& c);

// A number as the fitter's warnings write it ("%.3g").
std::string short_number(double v);

// Least-squares parabola y = c0 + c1 x + c2 x^2; false with fewer than 3 distinct x.
bool fit_parabola(const std::vector<double>& x, const std::vector<double>& y, double& c0,
                  double& c1, double& c2);

}  // namespace ladder::scaling
