#include "scaling/laws.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ladder::scaling {
namespace {

// log(exp(t0) + exp(t1) [+ exp(t2)]) and its softmax weights, the derivative in each term.
double log_sum_exp(const double* t, int count, double* weights) {
  double top = t[0];
  for (int i = 1; i < count; ++i)
    top = std::max(top, t[i]);
  double sum = 0;
  for (int i = 0; i < count; ++i)
    sum += (weights[i] = std::exp(t[i] - top));
  for (int i = 0; i < count; ++i)
    weights[i] /= sum;
  return top + std::log(sum);
}

std::vector<double> steps(double first, double last, double step) {
  std::vector<double> v;
  for (double x = first; x <= last + 1e-9; x += step)
    v.push_back(x);
  return v;
}

// Kaplan et al. 2020's single-variable power laws L = (X_c / X)^alpha_X, fitted as
// log L = alpha_X (log X_c - log X); X is N or C.
Law kaplan_law(const std::string& name, const std::string& X, std::vector<double> Features::*log_X,
               std::vector<double> log_X_c_grid) {
  return Law{name,
             "L = (" + X + "_c / " + X + ")^alpha_" + X,
             {X},
             {"log_" + X + "_c", "alpha_" + X},
             {std::move(log_X_c_grid), {0.02, 0.05, 0.1, 0.2, 0.5}},
             [log_X](const double* t, const Features& x, int64_t i, double* grad) {
               const double log_x = (x.*log_X)[i];
               if (grad) grad[0] = t[1], grad[1] = t[0] - log_x;
               return t[1] * (t[0] - log_x);
             },
             [X](const std::vector<double>& t) {
               return std::vector<std::pair<std::string, double>>{{X + "_c", std::exp(t[0])},
                                                                  {"alpha_" + X, t[1]}};
             }};
}

std::vector<Law> make_laws() {
  std::vector<Law> laws;
  // Hoffmann et al. 2022, Approach 3 (Appendix D.2): the grid of initialisations of the replication
  // by Besiroglu et al. 2024: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1},
  // a, b in {0, 5, ..., 25}.
  laws.push_back(
      Law{"chinchilla",
          "L = E + A / N^alpha + B / D^beta",
          {"N", "D"},
          {"a", "b", "e", "alpha", "beta"},
          {steps(0, 25, 5), steps(0, 25, 5), steps(-1, 1, 0.5), steps(0, 2, 0.5), steps(0, 2, 0.5)},
          [](const double* t, const Features& x, int64_t i, double* grad) {
            const double terms[3] = {t[0] - t[3] * x.log_N[i], t[1] - t[4] * x.log_D[i], t[2]};
            double w[3];
            const double out = log_sum_exp(terms, 3, w);
            if (grad) {
              grad[0] = w[0], grad[1] = w[1], grad[2] = w[2];
              grad[3] = -w[0] * x.log_N[i], grad[4] = -w[1] * x.log_D[i];
            }
            return out;
          },
          [](const std::vector<double>& t) {
            return std::vector<std::pair<std::string, double>>{{"E", std::exp(t[2])},
                                                               {"A", std::exp(t[0])},
                                                               {"B", std::exp(t[1])},
                                                               {"alpha", t[3]},
                                                               {"beta", t[4]}};
          }});
  laws.push_back(Law{
      "parscale",
      "L = E + (A * 1e9 / (N * (k * ln P + 1)))^alpha",
      {"N", "P"},
      {"a", "e", "alpha", "kappa"},
      {steps(-2, 3, 1), steps(-1, 1, 0.5), {0.1, 0.3, 0.5, 1.0}, steps(-3, 1, 1)},
      [](const double* t, const Features& x, int64_t i, double* grad) {
        const double k_ln_P = std::exp(t[3]) * x.log_P[i];  // k ln P, with k = e^kappa
        const double inner = t[0] + std::log(1e9) - x.log_N[i] - std::log(k_ln_P + 1.0);
        const double terms[2] = {t[2] * inner, t[1]};
        double w[2];
        const double out = log_sum_exp(terms, 2, w);
        if (grad) {
          grad[0] = w[0] * t[2], grad[1] = w[1], grad[2] = w[0] * inner;
          grad[3] = -w[0] * t[2] * k_ln_P / (k_ln_P + 1.0);
        }
        return out;
      },
      [](const std::vector<double>& t) {
        return std::vector<std::pair<std::string, double>>{
            {"E", std::exp(t[1])}, {"A", std::exp(t[0])}, {"alpha", t[2]}, {"k", std::exp(t[3])}};
      }});
  laws.push_back(kaplan_law("kaplan-n", "N", &Features::log_N, steps(5, 40, 5)));
  laws.push_back(kaplan_law("kaplan-c", "C", &Features::log_C, steps(10, 80, 10)));
  laws.push_back(
      Law{"routed",
          "log L = a * log N + b * log Ê + c * log N * log Ê + d,  1/Ê = 1/(E - 1 + (1/E_start - "
          "1/E_max)^-1) + 1/E_max",
          {"N_active", "E"},
          {"a", "b", "c", "d", "s", "m"},
          {{-0.2, -0.1, -0.05},
           {-0.1, -0.05, 0.0},
           {-0.01, 0.0, 0.01},
           steps(0, 4, 1),
           {0.0, 0.5, 1.0},
           {3.0, 5.0, 7.0}},
          [](const double* t, const Features& x, int64_t i, double* grad) {
            const double n = x.log_N_active[i], experts = std::exp(x.log_E[i]);
            // The transform and its derivatives in s and m (E_start = e^s, E_max = e^s + e^m).
            const double start = std::exp(t[4]), extra = std::exp(t[5]), max = start + extra;
            const double u = 1.0 / start - 1.0 / max;  // > 0
            const double inner = experts - 1.0 + 1.0 / u;
            const double r = 1.0 / inner + 1.0 / max;  // 1 / Ê
            const double log_hat = -std::log(r);
            if (grad) {
              // d log Ê = -dr / r; dr = -d(inner) / inner^2 - d(max) / max^2; d(inner) = -du / u^2;
              // du = -d(start) / start^2 + d(max) / max^2.
              auto d_log_hat = [&](double d_start, double d_max) {
                const double du = -d_start / (start * start) + d_max / (max * max);
                const double d_inner = -du / (u * u);
                const double dr = -d_inner / (inner * inner) - d_max / (max * max);
                return -dr / r;
              };
              const double slope = t[1] + t[2] * n;  // d prediction / d log Ê
              grad[0] = n, grad[1] = log_hat, grad[2] = n * log_hat, grad[3] = 1;
              grad[4] = slope * d_log_hat(start, start);
              grad[5] = slope * d_log_hat(0.0, extra);
            }
            return t[0] * n + t[1] * log_hat + t[2] * n * log_hat + t[3];
          },
          [](const std::vector<double>& t) {
            return std::vector<std::pair<std::string, double>>{
                {"a", t[0]},
                {"b", t[1]},
                {"c", t[2]},
                {"d", t[3]},
                {"E_start", std::exp(t[4])},
                {"E_max", std::exp(t[4]) + std::exp(t[5])}};
          }});
  laws.push_back(
      Law{"fine-grained",
          "L = c + (g / G^gamma + a) / N^alpha + b / D^beta",
          {"N_active", "D", "G"},
          {"la", "lg", "lb", "lc", "alpha", "beta", "gamma"},
          {steps(0, 10, 5),
           steps(0, 10, 5),
           steps(0, 10, 5),
           steps(-1, 1, 1),
           {0.2, 0.5, 1.0},
           {0.2, 0.5, 1.0},
           {0.2, 0.5, 1.0}},
          [](const double* t, const Features& x, int64_t i, double* grad) {
            const double log_G = x.log_G[i];
            const double coefficient[2] = {t[1] - t[6] * log_G, t[0]};  // log(g / G^gamma), log a
            double v[2];
            const double log_coefficient = log_sum_exp(coefficient, 2, v);
            const double terms[3] = {log_coefficient - t[4] * x.log_N_active[i],
                                     t[2] - t[5] * x.log_D[i], t[3]};
            double w[3];
            const double out = log_sum_exp(terms, 3, w);
            if (grad) {
              grad[0] = w[0] * v[1], grad[1] = w[0] * v[0], grad[2] = w[1], grad[3] = w[2];
              grad[4] = -w[0] * x.log_N_active[i], grad[5] = -w[1] * x.log_D[i];
              grad[6] = -w[0] * v[0] * log_G;
            }
            return out;
          },
          [](const std::vector<double>& t) {
            return std::vector<std::pair<std::string, double>>{
                {"a", std::exp(t[0])}, {"g", std::exp(t[1])}, {"b", std::exp(t[2])},
                {"c", std::exp(t[3])}, {"alpha", t[4]},       {"beta", t[5]},
                {"gamma", t[6]}};
          }});
  return laws;
}

const std::vector<Law>& all_laws() {
  static const std::vector<Law> laws = make_laws();
  return laws;
}

}  // namespace

Features Features::select(const std::vector<int64_t>& rows) const {
  Features out;
  // Columns a law does not read may be empty (the mixture law's Features hold only the loss and r).
  auto pick = [&](const auto& from, auto& to) {
    if (from.empty()) return;
    for (int64_t r : rows)
      to.push_back(from[r]);
  };
  pick(log_N, out.log_N), pick(log_D, out.log_D), pick(log_C, out.log_C);
  pick(log_P, out.log_P), pick(log_E, out.log_E), pick(log_loss, out.log_loss);
  pick(log_N_active, out.log_N_active), pick(log_G, out.log_G), pick(mixture, out.mixture);
  return out;
}

std::vector<std::string> law_names() {
  std::vector<std::string> names;
  for (const auto& l : all_laws())
    names.push_back(l.name);
  return names;
}

const Law& law_named(const std::string& name) {
  std::string known;
  for (const auto& l : all_laws()) {
    if (l.name == name) return l;
    known += (known.empty() ? "" : ", ") + l.name;
  }
  throw Error("--law " + name,
              "unknown law; known: " + known + ", isoflop, mixture, hyperparameters");
}

Features features(const std::vector<Point>& points, const Law& law) {
  const int64_t n = static_cast<int64_t>(points.size());
  auto column = [&](const std::string& q) {
    std::vector<double> out(static_cast<size_t>(n));
    const bool needed =
        q == "loss" || std::find(law.needs.begin(), law.needs.end(), q) != law.needs.end();
    for (int64_t i = 0; i < n; ++i) {
      const Point& p = points[i];
      double v = field(p, q);
      if (q == "C" && std::isnan(v)) v = 6.0 * p.N * p.D;
      if (q == "N_active" && std::isnan(v)) v = p.N;  // a dense model uses all its parameters
      if (needed && !(v > 0 && std::isfinite(v)))
        throw Error(p.run, "law " + law.name + " needs " + q +
                               " > 0 for every point; this one has " + q + " = " +
                               std::to_string(v) +
                               (q == "C" ? " (and no N and D to take it as 6 N D)" : ""));
      out[i] = std::log(v);
    }
    return out;
  };
  Features x;
  x.log_N = column("N"), x.log_D = column("D"), x.log_C = column("C"), x.log_P = column("P");
  x.log_E = column("E"), x.log_loss = column("loss");
  x.log_N_active = column("N_active"), x.log_G = column("G");
  return x;
}

}  // namespace ladder::scaling
