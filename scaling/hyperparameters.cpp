#include "scaling/hyperparameters.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"
#include "scaling/fit.h"

namespace ladder::scaling {
namespace {

bool near(double a, double b, double tolerance) {
  return std::abs(a - b) <= tolerance * std::max(std::abs(a), std::abs(b));
}

const char* kOthers[] = {"lr", "batch", "weight_decay"};

}  // namespace

double hyperparameter_value(const Point& p, const std::string& h) {
  if (h == "lr") return p.lr;
  if (h == "batch") {
    const double tokens = attribute_number(p, "batch_tokens");
    return std::isnan(tokens) ? attribute_number(p, "batch") : tokens;
  }
  return attribute_number(p, h);
}

double HyperparameterCell::timescale() const {
  // Bergsma et al. 2025: tau = B / (eta lambda D), here at the learning-rate optimum.
  if (!(weight_decay > 0) || !(batch > 0)) return kMissing;
  return batch / (optimum * weight_decay * D);
}

double HyperparameterLaw::predict(double N, double D) const {
  double log = log_coefficient;
  for (const auto& [variable, exponent] : exponents)
    log += exponent * std::log(variable == "N" ? N : variable == "D" ? D : 6 * N * D);
  return std::exp(log);
}

std::vector<HyperparameterCell> optimum_cells(const std::vector<Point>& points,
                                              const std::string& h,
                                              std::vector<std::string>& warnings) {
  // The last point of each run.
  std::map<std::string, const Point*> last;
  for (const Point& p : points) {
    const Point*& l = last[p.run];
    if (!l || p.D > l->D) l = &p;
  }
  // Cells: N within 1%, D within 2%.
  std::vector<std::vector<const Point*>> cells;
  for (const auto& [run, p] : last) {
    if (!(p->N > 0) || !(p->D > 0) || !(hyperparameter_value(*p, h) > 0))
      throw Error(run, "--law hyperparameters needs N, D and a positive " + h + " for every run");
    auto it = std::find_if(cells.begin(), cells.end(), [&](const auto& c) {
      return near(c[0]->N, p->N, 0.01) && near(c[0]->D, p->D, 0.02);
    });
    if (it == cells.end())
      cells.push_back({p});
    else
      it->push_back(p);
  }
  std::sort(cells.begin(), cells.end(),
            [](const auto& a, const auto& b) { return a[0]->N * a[0]->D < b[0]->N * b[0]->D; });
  std::vector<HyperparameterCell> out;
  for (const auto& runs : cells) {
    const Point* best = *std::min_element(runs.begin(), runs.end(), [](auto a, auto b) {
      return a->loss < b->loss || (a->loss == b->loss && a->run < b->run);
    });
    // The slice through the best run: the other hyperparameters at its values.
    std::vector<const Point*> slice;
    for (const Point* p : runs) {
      bool same = true;
      for (const char* other : kOthers)
        if (other != h) {
          const double a = hyperparameter_value(*p, other), b = hyperparameter_value(*best, other);
          same = same && ((std::isnan(a) && std::isnan(b)) || near(a, b, 1e-6));
        }
      if (same) slice.push_back(p);
    }
    std::sort(slice.begin(), slice.end(), [&](auto a, auto b) {
      return hyperparameter_value(*a, h) < hyperparameter_value(*b, h);
    });
    HyperparameterCell c;
    c.N = best->N, c.D = best->D;
    for (const Point* p : runs)
      c.surface.push_back({p->lr, hyperparameter_value(*p, "batch"), p->loss});
    for (const Point* p : slice)
      c.runs.push_back(p->run), c.value.push_back(hyperparameter_value(*p, h)),
          c.loss.push_back(p->loss);
    c.batch = hyperparameter_value(*best, "batch"), c.lr = best->lr;
    c.weight_decay = hyperparameter_value(*best, "weight_decay");
    const std::string cell = "cell N=" + short_number(c.N) + " D=" + short_number(c.D) + " (" +
                             std::to_string(c.runs.size()) + " runs: " + c.runs.front() +
                             (c.runs.size() > 1 ? " ... " + c.runs.back() : "") + ")";
    size_t at_best = 0;
    for (size_t i = 0; i < c.runs.size(); ++i)
      if (c.runs[i] == best->run) at_best = i;
    const size_t from = at_best >= 2 ? at_best - 2 : 0, to = std::min(c.value.size(), at_best + 3);
    std::vector<double> x, y;
    for (size_t i = from; i < to; ++i)
      x.push_back(std::log(c.value[i])), y.push_back(c.loss[i]);
    if (c.value.size() < 3 || !fit_parabola(x, y, c.c0, c.c1, c.c2)) {
      warnings.push_back(h + ": " + cell + " has fewer than 3 values of " + h + "; left out");
      continue;
    }
    const double opt = -c.c1 / (2 * c.c2);
    if (at_best == 0 || at_best + 1 == c.value.size() || !(c.c2 > 0) ||
        opt < std::log(c.value.front()) || opt > std::log(c.value.back())) {
      warnings.push_back(h + ": " + cell + " has its best " + h + " (" +
                         short_number(c.value[at_best]) + ") at an edge of its grid; left out");
      continue;
    }
    c.optimum = std::exp(opt);
    c.loss_at_optimum = c.c0 + c.c1 * opt + c.c2 * opt * opt;
    out.push_back(std::move(c));
  }
  return out;
}

HyperparameterLaw fit_optimum_law(const std::vector<HyperparameterCell>& cells,
                                  const std::string& h, bool in_compute) {
  HyperparameterLaw law;
  law.hyperparameter = h, law.in_compute = in_compute;
  // The variables that vary across the cells.
  auto varies = [&](auto f) {
    for (const auto& c : cells)
      if (!near(f(c), f(cells.front()), 0.01)) return true;
    return false;
  };
  std::vector<std::string> variables;
  if (in_compute) {
    if (!cells.empty() && varies([](const auto& c) { return c.N * c.D; })) variables = {"C"};
  } else {
    if (!cells.empty() && varies([](const auto& c) { return c.N; })) variables.push_back("N");
    if (!cells.empty() && varies([](const auto& c) { return c.D; })) variables.push_back("D");
  }
  if (variables.empty() || cells.size() < variables.size() + 2)
    throw Error(
        "--law hyperparameters",
        h + ": " + std::to_string(cells.size()) + " cells with an optimum inside their grid" +
            (variables.empty()
                 ? ", all of one N and D"
                 : "; a law in " + std::to_string(variables.size()) + " variables needs at least " +
                       std::to_string(variables.size() + 2)));
  std::vector<std::vector<double>> rows;
  std::vector<double> y;
  for (const auto& c : cells) {
    std::vector<double> row = {1.0};
    for (const auto& v : variables)
      row.push_back(std::log(v == "N" ? c.N : v == "D" ? c.D : 6 * c.N * c.D));
    rows.push_back(row);
    y.push_back(std::log(c.optimum));
  }
  std::vector<double> coefficients;
  if (!least_squares(rows, y, coefficients))
    throw Error("--law hyperparameters", h + ": the cells' N and D are collinear: no law separates "
                                             "them (--in-compute fits one in C)");
  law.log_coefficient = coefficients[0];
  for (size_t j = 0; j < variables.size(); ++j)
    law.exponents.emplace_back(variables[j], coefficients[j + 1]);
  return law;
}

}  // namespace ladder::scaling
