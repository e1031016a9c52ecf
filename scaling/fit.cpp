#include "scaling/fit.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "core/hash.h"

namespace ladder::scaling {
namespace {

struct Minimum {
  std::vector<double> theta;
  double objective = std::numeric_limits<double>::infinity();
};

// The summed Huber loss of the log-loss residuals at theta, and its gradient when `grad` is given.
double objective(const Law& law, const double* theta, const Features& x, double delta,
                 std::vector<double>* grad) {
  const size_t k = law.variables.size();
  std::vector<double> dpred(k);
  if (grad) grad->assign(k, 0.0);
  double sum = 0;
  for (int64_t i = 0; i < x.size(); ++i) {
    const double r = law.log_loss(theta, x, i, grad ? dpred.data() : nullptr) - x.log_loss[i];
    const double a = std::abs(r);
    sum += a <= delta ? 0.5 * r * r : delta * (a - 0.5 * delta);
    if (grad) {
      const double dr = a <= delta ? r : (r > 0 ? delta : -delta);
      for (size_t j = 0; j < k; ++j)
        (*grad)[j] += dr * dpred[j];
    }
  }
  return sum;
}

// One run of LibTorch's L-BFGS (fp64, strong-Wolfe line search) from `start`; the objective and its
// gradient come from objective() above. A run from the grid also stops when the objective changes
// by less than 1e-12 (cheap, and enough to rank the starts); a polishing run (polish()) stops only
// on the gradient or its iterations.
Minimum minimize(const Law& law, const Features& x, const std::vector<double>& start,
                 double delta) {
  torch::Tensor theta = torch::tensor(start, torch::kFloat64).requires_grad_(true);
  torch::optim::LBFGS optimizer(std::vector<torch::Tensor>{theta},
                                torch::optim::LBFGSOptions(1.0)
                                    .max_iter(1000)
                                    .max_eval(1250)
                                    .tolerance_grad(1e-9)
                                    .tolerance_change(1e-12)
                                    .history_size(10)
                                    .line_search_fn("strong_wolfe"));
  std::vector<double> grad;
  optimizer.step([&]() -> torch::Tensor {
    const double value = objective(law, theta.data_ptr<double>(), x, delta, &grad);
    theta.mutable_grad() = torch::tensor(grad, torch::kFloat64);
    return torch::tensor(value, torch::kFloat64);
  });
  Minimum m;
  m.theta.assign(theta.data_ptr<double>(), theta.data_ptr<double>() + theta.numel());
  m.objective = objective(law, m.theta.data(), x, delta, nullptr);
  if (!std::isfinite(m.objective) ||
      !std::all_of(m.theta.begin(), m.theta.end(), [](double v) { return std::isfinite(v); }))
    m.objective = std::numeric_limits<double>::infinity();
  return m;
}

double gradient_norm(const Law& law, const std::vector<double>& theta, const Features& x,
                     double delta) {
  std::vector<double> grad;
  objective(law, theta.data(), x, delta, &grad);
  double sum = 0;
  for (double g : grad)
    sum += g * g;
  return std::sqrt(sum);
}

// Solves a x = b (k x k, row-major) by Gaussian elimination with partial pivoting; false when
// singular.
bool solve(std::vector<double> a, std::vector<double> b, size_t k, std::vector<double>& x) {
  for (size_t c = 0; c < k; ++c) {
    size_t p = c;
    for (size_t r = c + 1; r < k; ++r)
      if (std::abs(a[r * k + c]) > std::abs(a[p * k + c])) p = r;
    if (!(std::abs(a[p * k + c]) > 0)) return false;
    for (size_t j = 0; j < k; ++j)
      std::swap(a[c * k + j], a[p * k + j]);
    std::swap(b[c], b[p]);
    for (size_t r = c + 1; r < k; ++r) {
      const double f = a[r * k + c] / a[c * k + c];
      for (size_t j = c; j < k; ++j)
        a[r * k + j] -= f * a[c * k + j];
      b[r] -= f * b[c];
    }
  }
  x.assign(k, 0.0);
  for (size_t c = k; c-- > 0;) {
    double s = b[c];
    for (size_t j = c + 1; j < k; ++j)
      s -= a[c * k + j] * x[j];
    x[c] = s / a[c * k + c];
  }
  return std::all_of(x.begin(), x.end(), [](double v) { return std::isfinite(v); });
}

// The best start polished until converged. On a flat objective (a few 1e-5 summed over a ladder of
// losses near 3) L-BFGS stops on the objective's change 1e-5 relative above the minimum with a
// gradient of 5e-5, which moves E by percents; its curvature there is badly conditioned (log A and
// log B against exponents of log N ~ 20), so more L-BFGS iterations crawl. Damped Newton
// (Levenberg-Marquardt on the Hessian, by central differences of the exact gradient) converges
// there in a few steps: stop when the gradient is below 1e-11 or no step lowers the objective.
Minimum polish(const Law& law, const Features& x, Minimum best, double delta) {
  const size_t k = best.theta.size();
  std::vector<double> g, gp, gm, h(k * k), step;
  double damping = 1e-6;
  for (int iteration = 0; iteration < 100; ++iteration) {
    objective(law, best.theta.data(), x, delta, &g);
    double norm = 0;
    for (double v : g)
      norm += v * v;
    if (std::sqrt(norm) < 1e-11) break;
    for (size_t j = 0; j < k; ++j) {  // column j of the Hessian
      const double e = 1e-5 * std::max(1.0, std::abs(best.theta[j]));
      std::vector<double> t = best.theta;
      t[j] = best.theta[j] + e;
      objective(law, t.data(), x, delta, &gp);
      t[j] = best.theta[j] - e;
      objective(law, t.data(), x, delta, &gm);
      for (size_t i = 0; i < k; ++i)
        h[i * k + j] = (gp[i] - gm[i]) / (2 * e);
    }
    for (size_t i = 0; i < k; ++i)
      for (size_t j = 0; j < i; ++j)
        h[i * k + j] = h[j * k + i] = 0.5 * (h[i * k + j] + h[j * k + i]);
    bool improved = false;
    for (int tries = 0; tries < 30 && !improved; ++tries) {
      std::vector<double> damped = h, minus_g(k);
      for (size_t i = 0; i < k; ++i)
        damped[i * k + i] += damping * std::max(std::abs(h[i * k + i]), 1e-12), minus_g[i] = -g[i];
      if (!solve(damped, minus_g, k, step)) continue;
      std::vector<double> t = best.theta;
      for (size_t i = 0; i < k; ++i)
        t[i] += step[i];
      const double value = objective(law, t.data(), x, delta, nullptr);
      if (std::isfinite(value) && value < best.objective) {
        improved = true;
        best.theta = t, best.objective = value;
      } else {
        damping *= 10;
      }
    }
    if (!improved) break;
    damping = std::max(damping / 100, 1e-12);
  }
  return best;
}

// Every combination of the grid's axes, one row per start, the last axis varying fastest.
std::vector<std::vector<double>> grid_points(const Law& law) {
  size_t count = 1;
  for (const auto& axis : law.grid)
    count *= axis.size();
  std::vector<std::vector<double>> grid(count, std::vector<double>(law.grid.size()));
  for (size_t row = 0; row < count; ++row) {
    size_t rest = row;
    for (size_t j = law.grid.size(); j-- > 0;) {
      grid[row][j] = law.grid[j][rest % law.grid[j].size()];
      rest /= law.grid[j].size();
    }
  }
  return grid;
}

}  // namespace

Interval percentile_interval(std::vector<double> values) {
  if (values.empty()) return {std::nan(""), std::nan("")};
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    const double pos = q * static_cast<double>(values.size() - 1);
    const auto lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, values.size() - 1);
    return values[lo] + (pos - static_cast<double>(lo)) * (values[hi] - values[lo]);
  };
  return {at(0.025), at(0.975)};
}

FitResult fit_law(const Law& law, const Features& x, const FitOptions& options) {
  const int64_t n = x.size();
  const auto k = static_cast<int64_t>(law.variables.size());
  if (n <= k)
    throw Error("ladder fit", "law " + law.name + " has " + std::to_string(k) +
                                  " parameters but only " + std::to_string(n) +
                                  " points remain to fit them");

  FitResult result;
  result.points = n;
  const auto grid = grid_points(law);
  result.grid_points = static_cast<int64_t>(grid.size());
  std::vector<double> scores;
  for (const auto& start : grid) {
    const double s = objective(law, start.data(), x, options.huber_delta, nullptr);
    scores.push_back(std::isfinite(s) ? s : std::numeric_limits<double>::infinity());
  }
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return scores[a] < scores[b]; });
  result.starts = options.starts > 0 ? std::min<int64_t>(options.starts, result.grid_points)
                                     : result.grid_points;
  Minimum best;
  for (int64_t s = 0; s < result.starts; ++s) {
    const Minimum m = minimize(law, x, grid[order[s]], options.huber_delta);
    if (m.objective < best.objective) best = m;
  }
  if (!std::isfinite(best.objective))
    throw Error("ladder fit", "law " + law.name + ": no start of the grid reached a finite fit");
  best = polish(law, x, best, options.huber_delta);
  result.theta = best.theta;
  result.objective = best.objective;
  result.gradient_norm = gradient_norm(law, best.theta, x, options.huber_delta);
  result.parameters = law.parameters(best.theta);

  // Bootstrap: resample the points with replacement, refit from the point estimate.
  uint64_t state = hash_words(options.seed, 0x626f6f74);  // "boot"
  for (int64_t b = 0; b < options.bootstrap; ++b) {
    std::vector<int64_t> rows(static_cast<size_t>(n));
    for (auto& r : rows)
      r = static_cast<int64_t>((state = splitmix64(state)) % static_cast<uint64_t>(n));
    const Features resample = x.select(rows);
    const Minimum m =
        polish(law, resample, minimize(law, resample, best.theta, options.huber_delta),
               options.huber_delta);
    if (std::isfinite(m.objective))
      result.bootstrap_theta.push_back(m.theta);
    else
      ++result.bootstrap_failed;
  }
  if (!result.bootstrap_theta.empty()) {
    for (size_t j = 0; j < result.parameters.size(); ++j) {
      std::vector<double> values;
      for (const auto& t : result.bootstrap_theta)
        values.push_back(law.parameters(t)[j].second);
      result.intervals[result.parameters[j].first] = percentile_interval(values);
    }
  }
  return result;
}

double Allocation::N_opt(double C) const {
  return G * std::pow(C / 6.0, a);
}

double Allocation::D_opt(double C) const {
  return std::pow(C / 6.0, b) / G;
}

Allocation chinchilla_allocation(const std::vector<double>& theta) {
  const double A = std::exp(theta[0]), B = std::exp(theta[1]), alpha = theta[3], beta = theta[4];
  Allocation out;
  out.a = beta / (alpha + beta);
  out.b = alpha / (alpha + beta);
  out.G = std::pow(alpha * A / (beta * B), 1.0 / (alpha + beta));
  return out;
}

std::vector<Point> resample_runs(const std::vector<Point>& points, uint64_t& state) {
  std::vector<std::string> runs;
  std::map<std::string, std::vector<const Point*>> by_run;
  for (const Point& p : points) {
    auto& list = by_run[p.run];
    if (list.empty()) runs.push_back(p.run);
    list.push_back(&p);
  }
  std::vector<Point> out;
  for (size_t draw = 0; draw < runs.size(); ++draw) {
    const std::string& run = runs[(state = splitmix64(state)) % runs.size()];
    for (const Point* p : by_run[run]) {
      out.push_back(*p);
      out.back().run = run + "#" + std::to_string(draw);
    }
  }
  return out;
}

std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

bool least_squares(const std::vector<std::vector<double>>& rows, const std::vector<double>& y,
                   std::vector<double>& c) {
  if (rows.empty()) return false;
  const size_t k = rows[0].size();
  std::vector<double> a(k * k, 0.0), b(k, 0.0);
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t i = 0; i < k; ++i) {
      b[i] += rows[r][i] * y[r];
      for (size_t j = 0; j < k; ++j)
        a[i * k + j] += rows[r][i] * rows[r][j];
    }
  return solve(a, b, k, c);
}

bool fit_parabola(const std::vector<double>& x, const std::vector<double>& y, double& c0,
                  double& c1, double& c2) {
  std::vector<double> distinct = x;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  if (distinct.size() < 3) return false;
  // Normal equations in x centred on its mean (better conditioned), solved by Cramer's rule.
  const double mean = std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size());
  double s[5] = {0, 0, 0, 0, 0}, t[3] = {0, 0, 0};
  for (size_t i = 0; i < x.size(); ++i) {
    const double u = x[i] - mean;
    double p = 1;
    for (int j = 0; j < 5; ++j, p *= u)
      s[j] += p;
    t[0] += y[i], t[1] += u * y[i], t[2] += u * u * y[i];
  }
  const double m[3][3] = {{s[0], s[1], s[2]}, {s[1], s[2], s[3]}, {s[2], s[3], s[4]}};
  auto det = [](const double a[3][3]) {
    return a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
           a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
           a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
  };
  const double d = det(m);
  if (d == 0 || !std::isfinite(d)) return false;
  double c[3];
  for (int col = 0; col < 3; ++col) {
    double r[3][3];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        r[i][j] = j == col ? t[i] : m[i][j];
    c[col] = det(r) / d;
  }
  // Back from u = x - mean.
  c2 = c[2];
  c1 = c[1] - 2 * c[2] * mean;
  c0 = c[0] - c[1] * mean + c[2] * mean * mean;
  return true;
}

namespace {

// Least-squares line y = slope x + intercept.
void fit_line(const std::vector<double>& x, const std::vector<double>& y, double& slope,
              double& intercept) {
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < x.size(); ++i)
    sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx);
  slope = sxx > 0 ? sxy / sxx : std::nan("");
  intercept = my - slope * mx;
}

// Fits the budget's parabola; false (with a warning) when it has no minimum inside its sizes.
bool locate_minimum(IsoflopBudget& b, std::vector<std::string>& warnings) {
  std::vector<double> x;
  for (double N : b.N)
    x.push_back(std::log(N));
  if (!fit_parabola(x, b.loss, b.c0, b.c1, b.c2)) {
    warnings.push_back("isoflop: budget C = " + short_number(b.C) +
                       " has fewer than 3 model sizes; skipped");
    return false;
  }
  const double lo = *std::min_element(x.begin(), x.end()),
               hi = *std::max_element(x.begin(), x.end());
  const double at = -b.c1 / (2 * b.c2);
  if (!(b.c2 > 0) || at < lo || at > hi) {
    warnings.push_back("isoflop: budget C = " + short_number(b.C) +
                       " has no loss minimum inside its model sizes (" +
                       short_number(std::exp(lo)) + " to " + short_number(std::exp(hi)) +
                       "); skipped");
    return false;
  }
  b.N_opt = std::exp(at);
  b.loss_opt = b.c0 + b.c1 * at + b.c2 * at * at;
  // D at the optimum: the budget's models lie on a line in (ln N, ln D).
  std::vector<double> log_D;
  for (double D : b.D)
    log_D.push_back(std::log(D));
  double slope = 0, intercept = 0;
  fit_line(x, log_D, slope, intercept);
  b.D_opt = std::exp(slope * at + intercept);
  return true;
}

}  // namespace

IsoflopResult isoflop_profiles(const std::vector<Point>& points,
                               std::vector<std::string>& warnings) {
  // Runs, each a curve of (C, loss) sorted by C, with its N.
  struct Curve {
    double N = 0;
    std::vector<double> log_C, log_D, loss;
  };
  std::map<std::string, Curve> runs;
  for (const Point& p : points) {
    double C = p.C;
    if (std::isnan(C)) C = 6.0 * p.N * p.D;
    if (!(p.N > 0 && p.D > 0 && C > 0))
      throw Error(p.run, "isoflop profiles need N > 0, D > 0 and C > 0 (or N and D for 6 N D)");
    Curve& c = runs[p.run];
    c.N = p.N;
    c.log_C.push_back(std::log(C)), c.log_D.push_back(std::log(p.D)), c.loss.push_back(p.loss);
  }
  const bool single = std::all_of(runs.begin(), runs.end(),
                                  [](const auto& r) { return r.second.log_C.size() == 1; });
  IsoflopResult result;
  result.interpolated = !single;
  std::vector<IsoflopBudget> budgets;
  if (single) {
    // Published isoFLOP data: group by C within 2%.
    std::vector<const Curve*> sorted;
    for (const auto& [name, c] : runs)
      sorted.push_back(&c);
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const Curve* a, const Curve* b) { return a->log_C[0] < b->log_C[0]; });
    for (const Curve* c : sorted) {
      if (budgets.empty() || c->log_C[0] - std::log(budgets.back().C) > std::log(1.02))
        budgets.emplace_back().C = std::exp(c->log_C[0]);
      budgets.back().N.push_back(c->N);
      budgets.back().D.push_back(std::exp(c->log_D[0]));
      budgets.back().loss.push_back(c->loss[0]);
    }
  } else {
    // Loss curves: 8 budgets, log-spaced over the range of C, each run interpolated in ln C.
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (auto& [name, c] : runs) {
      std::vector<size_t> idx(c.log_C.size());
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(),
                       [&](size_t a, size_t b) { return c.log_C[a] < c.log_C[b]; });
      Curve s{c.N, {}, {}, {}};
      for (size_t i : idx)
        s.log_C.push_back(c.log_C[i]), s.log_D.push_back(c.log_D[i]), s.loss.push_back(c.loss[i]);
      c = s;
      lo = std::min(lo, c.log_C.front()), hi = std::max(hi, c.log_C.back());
    }
    const int count = 8;
    for (int k = 0; k < count; ++k) {
      const double at = lo + (hi - lo) * (k + 0.5) / count;
      IsoflopBudget b;
      b.C = std::exp(at);
      for (const auto& [name, c] : runs) {
        if (at < c.log_C.front() || at > c.log_C.back()) continue;
        const size_t j = std::upper_bound(c.log_C.begin(), c.log_C.end(), at) - c.log_C.begin();
        const size_t i0 = j == 0 ? 0 : j - 1, i1 = std::min(j, c.log_C.size() - 1);
        const double w = i1 == i0 ? 0 : (at - c.log_C[i0]) / (c.log_C[i1] - c.log_C[i0]);
        b.N.push_back(c.N);
        b.D.push_back(std::exp(c.log_D[i0] + w * (c.log_D[i1] - c.log_D[i0])));
        b.loss.push_back(c.loss[i0] + w * (c.loss[i1] - c.loss[i0]));
      }
      budgets.push_back(b);
    }
  }
  for (auto& b : budgets)
    if (locate_minimum(b, warnings)) result.budgets.push_back(b);
  if (result.budgets.size() < 2)
    throw Error("ladder fit --law isoflop",
                "needs at least 2 compute budgets with a loss minimum inside their model sizes; "
                "found " +
                    std::to_string(result.budgets.size()));
  std::vector<double> log_C, log_N, log_D;
  for (const auto& b : result.budgets)
    log_C.push_back(std::log(b.C)), log_N.push_back(std::log(b.N_opt)),
        log_D.push_back(std::log(b.D_opt));
  fit_line(log_C, log_N, result.a, result.log_N_coeff);
  fit_line(log_C, log_D, result.b, result.log_D_coeff);
  return result;
}

const std::vector<std::string>& transfer_axes() {
  static const std::vector<std::string> axes = {"width", "depth"};
  return axes;
}

Transfer transfer(const std::vector<Point>& points, const std::string& hyperparameter,
                  std::vector<std::string>& warnings, const std::string& axis) {
  const std::string flag = hyperparameter == "lr" ? "--lr-transfer" : "--wd-transfer";
  if (std::find(transfer_axes().begin(), transfer_axes().end(), axis) == transfer_axes().end())
    throw Error("ladder fit " + flag + " --along " + axis, "the axis is width or depth");
  // The last point of each run.
  std::map<std::string, const Point*> last;
  for (const Point& p : points) {
    const Point*& l = last[p.run];
    if (!l || p.D > l->D) l = &p;
  }
  std::map<double, TransferCurve> by_axis;
  for (const auto& [run, p] : last) {
    const double value = hyperparameter == "lr" ? p->lr : attribute_number(*p, hyperparameter);
    const double at = axis == "width" ? p->width : attribute_number(*p, axis);
    if (!(at > 0) || !(value > 0))
      throw Error(
          run, flag + " needs a " + axis + " and a positive " + hyperparameter + " for every run");
    TransferCurve& c = by_axis[at];
    c.at = at;
    c.value.push_back(value), c.loss.push_back(p->loss);
  }
  Transfer result;
  result.hyperparameter = hyperparameter;
  result.axis = axis;
  for (auto& [at_value, c] : by_axis) {
    // In order of value; the best grid point and up to two neighbours on each side.
    std::vector<size_t> order(c.value.size());
    for (size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return c.value[a] < c.value[b]; });
    size_t best = 0;
    for (size_t i = 1; i < order.size(); ++i)
      if (c.loss[order[i]] < c.loss[order[best]]) best = i;
    const size_t from = best >= 2 ? best - 2 : 0, to = std::min(order.size(), best + 3);
    std::vector<double> x, y;
    for (size_t i = from; i < to; ++i)
      x.push_back(std::log(c.value[order[i]])), y.push_back(c.loss[order[i]]);
    if (order.size() < 3 || !fit_parabola(x, y, c.c0, c.c1, c.c2)) {
      warnings.push_back(hyperparameter + " transfer: " + axis + " " + short_number(at_value) +
                         " has fewer than 3 values; skipped");
      continue;
    }
    const double x_opt = -c.c1 / (2 * c.c2);
    const double lo = std::log(c.value[order.front()]), hi = std::log(c.value[order.back()]);
    if (best == 0 || best + 1 == order.size() || !(c.c2 > 0) || x_opt < lo || x_opt > hi) {
      warnings.push_back(hyperparameter + " transfer: " + axis + " " + short_number(at_value) +
                         " has no loss minimum inside its values (best at " +
                         short_number(c.value[order[best]]) + "); skipped");
      continue;
    }
    c.value_opt = std::exp(x_opt);
    c.loss_opt = c.c0 + c.c1 * x_opt + c.c2 * x_opt * x_opt;
    result.curves.push_back(c);
  }
  if (result.curves.empty())
    throw Error("ladder fit " + flag, "no " + axis + " has a sweep of " + hyperparameter +
                                          " with a minimum inside it (3 or more values per " +
                                          axis + " are needed)");
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (const auto& c : result.curves)
    lo = std::min(lo, c.value_opt), hi = std::max(hi, c.value_opt);
  result.spread = hi / lo;
  return result;
}

}  // namespace ladder::scaling
