#include "scaling/fit_command.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/files.h"
#include "core/format.h"
#include "core/plot.h"
#include "scaling/hyperparameters.h"
#include "scaling/mixture.h"

namespace ladder::scaling {
namespace fs = std::filesystem;
namespace {

using json = nlohmann::ordered_json;  // keys in the order written: readable and deterministic

std::string num(double v, const char* format = "%.4g") {
  char buf[48];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// The 95% interval of bootstrap values as [low, high], or null without any.
json ci95_json(const std::vector<double>& values) {
  if (values.empty()) return nullptr;
  const Interval i = percentile_interval(values);
  return json::array({i.low, i.high});
}

json interval_json(const FitResult& r, const std::string& name) {
  const auto it = r.intervals.find(name);
  if (it == r.intervals.end()) return nullptr;
  return json::array({it->second.low, it->second.high});
}

std::string interval_text(const FitResult& r, const std::string& name) {
  const auto it = r.intervals.find(name);
  if (it == r.intervals.end()) return "";
  return "[" + num(it->second.low) + ", " + num(it->second.high) + "]";
}

// Runs the figure's gnuplot script (core/plot.h) under the fits' common style.
std::string plot(const fs::path& dir, const std::string& name, const std::string& body,
                 std::vector<std::string>& warnings) {
  return run_gnuplot(dir.string(), name,
                     "set grid\nset key top right\nset autoscale fix\n"
                     "set offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05\n"
                     "set format x '%.0e'\n" +
                         body,
                     warnings);
}

size_t run_count(const std::vector<Point>& points) {
  std::set<std::string> runs;
  for (const auto& p : points)
    runs.insert(p.run);
  return runs.size();
}

// One group of points with its least-squares parabola in ln x: an isoFLOP budget, or one width's
// learning-rate sweep.
struct ParabolaGroup {
  std::string title;
  const std::vector<double>& x;
  const std::vector<double>& y;
  double c0, c1, c2;
};

// Writes NAME.dat (the points) and NAME_fit.dat (the parabolas), one block per group, and plots
// them against a logarithmic x axis. Returns the PNG's name, or "".
std::string plot_parabolas(const fs::path& dir, const std::string& name, const std::string& x_label,
                           const std::string& y_label, const std::vector<ParabolaGroup>& groups,
                           std::vector<std::string>& warnings) {
  std::ostringstream data, curves;
  std::string plots;
  for (size_t k = 0; k < groups.size(); ++k) {
    const ParabolaGroup& g = groups[k];
    for (size_t i = 0; i < g.x.size(); ++i)
      data << num(g.x[i], "%.10g") << ' ' << num(g.y[i], "%.10g") << '\n';
    data << "\n\n";
    const double lo = *std::min_element(g.x.begin(), g.x.end());
    const double hi = *std::max_element(g.x.begin(), g.x.end());
    for (int i = 0; i <= 40; ++i) {
      const double x = lo * std::pow(hi / lo, i / 40.0), u = std::log(x);
      curves << num(x, "%.10g") << ' ' << num(g.c0 + g.c1 * u + g.c2 * u * u, "%.10g") << '\n';
    }
    curves << "\n\n";
    const std::string block = " index " + std::to_string(k),
                      colour = " lc " + std::to_string(k + 1);
    plots += std::string(k ? ", " : "") + "'" + name + ".dat'" + block + " with points pt 7" +
             colour + " title '" + g.title + "', '" + name + "_fit.dat'" + block + " with lines" +
             colour + " notitle";
  }
  write_text_file((dir / (name + ".dat")).string(),
                  "# " + x_label + ", " + y_label + "; one block per group\n" + data.str());
  write_text_file(
      (dir / (name + "_fit.dat")).string(),
      "# " + x_label + ", fitted parabola in ln x; one block per group\n" + curves.str());
  return plot(dir, name,
              "set logscale x\nset xlabel '" + x_label + "'\nset ylabel '" + y_label + "'\nplot " +
                  plots + "\n",
              warnings);
}

// ----- A law of laws.h -----

void fit_a_law(const FitCommand& c, const std::vector<Point>& points, json& out,
               std::vector<std::string>& warnings, std::vector<std::string>& pngs) {
  const Law& law = law_named(c.law);
  // --holdout K: the K largest model sizes stay out of the fit and test its extrapolation.
  std::vector<Point> fitted, held;
  std::set<double> sizes;
  if (c.holdout > 0) {
    for (const auto& p : points) {
      if (std::isnan(p.N)) throw Error(p.run, "--holdout needs N for every point");
      sizes.insert(p.N);
    }
    if (static_cast<int64_t>(sizes.size()) <= c.holdout)
      throw Error("--holdout " + std::to_string(c.holdout),
                  "the points have only " + std::to_string(sizes.size()) +
                      " model sizes; at least one must stay in the fit");
  }
  std::set<double> held_sizes;
  for (auto it = sizes.rbegin(); static_cast<int64_t>(held_sizes.size()) < c.holdout; ++it)
    held_sizes.insert(*it);
  for (const auto& p : points)
    (held_sizes.count(p.N) ? held : fitted).push_back(p);

  const Features x = features(fitted, law);
  const FitResult r = fit_law(law, x, c.fit);

  std::printf("ladder fit: %s   %s\n", law.name.c_str(), law.formula.c_str());
  std::printf(
      "%lld points from %zu runs; Huber delta %g on log-loss residuals (summed); L-BFGS from the "
      "best %lld of %lld grid points; %lld bootstrap resamples%s\n\n",
      static_cast<long long>(r.points), run_count(fitted), c.fit.huber_delta,
      static_cast<long long>(r.starts), static_cast<long long>(r.grid_points),
      static_cast<long long>(c.fit.bootstrap),
      r.bootstrap_failed ? (" (" + std::to_string(r.bootstrap_failed) + " failed)").c_str() : "");
  std::printf("%-12s %14s   %s\n", "parameter", "value", c.fit.bootstrap > 0 ? "95% interval" : "");
  json params = json::object();
  for (const auto& [name, value] : r.parameters) {
    std::printf("%-12s %14s   %s\n", name.c_str(), num(value, "%.6g").c_str(),
                interval_text(r, name).c_str());
    params[name] = {{"value", value}, {"ci95", interval_json(r, name)}};
  }
  std::printf("%-12s %14s   (gradient norm %s)\n", "objective", num(r.objective, "%.6g").c_str(),
              num(r.gradient_norm, "%.2g").c_str());
  out["law"] = law.name;
  out["formula"] = law.formula;
  out["parameters"] = params;
  out["objective"] = r.objective;
  out["gradient_norm"] = r.gradient_norm;
  out["points"] = r.points;
  out["runs"] = run_count(fitted);
  out["settings"] = {{"inputs", c.inputs},
                     {"huber_delta", c.fit.huber_delta},
                     {"grid_points", r.grid_points},
                     {"starts", r.starts},
                     {"bootstrap", c.fit.bootstrap},
                     {"bootstrap_failed", r.bootstrap_failed},
                     {"seed", c.fit.seed},
                     {"drop_first", c.points.drop_first},
                     {"final_only", c.points.final_only},
                     {"filters", c.points.filters},
                     {"holdout", c.holdout}};

  double c_min = INFINITY, c_max = 0;
  for (double log_c : x.log_C)
    if (std::isfinite(log_c))
      c_min = std::min(c_min, std::exp(log_c)), c_max = std::max(c_max, std::exp(log_c));

  if (law.name == "chinchilla") {
    // Compute-optimal allocation (Hoffmann et al. 2022, eq. 4), with bootstrap intervals on the
    // exponents.
    const Allocation a = chinchilla_allocation(r.theta);
    std::vector<double> as, bs;
    for (const auto& t : r.bootstrap_theta) {
      const Allocation b = chinchilla_allocation(t);
      as.push_back(b.a), bs.push_back(b.b);
    }
    json allocation = {{"formula", "N_opt = G (C/6)^a, D_opt = (C/6)^b / G, C = 6 N D"},
                       {"a", a.a},
                       {"a_ci95", ci95_json(as)},
                       {"b", a.b},
                       {"b_ci95", ci95_json(bs)},
                       {"G", a.G}};
    std::printf("\ncompute-optimal allocation (C = 6 N D): N_opt ~ C^%s, D_opt ~ C^%s\n",
                num(a.a).c_str(), num(a.b).c_str());
    std::printf("%12s %14s %14s %10s %10s\n", "C (FLOPs)", "N_opt", "D_opt", "D/N", "loss");
    json table = json::array();
    const int first = static_cast<int>(std::floor(std::log10(c_min)));
    const int last = static_cast<int>(std::ceil(std::log10(c_max))) + 2;
    for (int e = first; e <= last; ++e) {
      const double C = std::pow(10.0, e), N = a.N_opt(C), D = a.D_opt(C);
      const double loss = r.parameters[0].second +
                          r.parameters[1].second / std::pow(N, r.theta[3]) +
                          r.parameters[2].second / std::pow(D, r.theta[4]);
      std::printf("%12s %14s %14s %10s %10s\n", num(C, "%.0e").c_str(), num(N, "%.4g").c_str(),
                  num(D, "%.4g").c_str(), num(D / N, "%.3g").c_str(), num(loss, "%.4f").c_str());
      table.push_back(
          {{"C", C}, {"N_opt", N}, {"D_opt", D}, {"tokens_per_parameter", D / N}, {"loss", loss}});
    }
    allocation["table"] = table;
    out["allocation"] = allocation;
  }
  if (law.name == "parscale") {
    // What P streams are worth in parameters: N_eff = N (k ln P + 1).
    json multiplier = json::object();
    std::printf("\nstreams are worth N x (k ln P + 1):");
    for (int P : {2, 4, 8}) {
      const double m = r.parameters[3].second * std::log(P) + 1;
      std::printf("  P=%d: %.3fx", P, m);
      multiplier[std::to_string(P)] = m;
    }
    std::printf("\n");
    out["stream_multiplier"] = multiplier;
  }

  auto predict = [&](const Features& f, int64_t i) {
    return std::exp(law.log_loss(r.theta.data(), f, i, nullptr));
  };
  if (!held.empty()) {
    const Features xh = features(held, law);
    json rows = json::array();
    double sum = 0, worst = 0;
    for (int64_t i = 0; i < xh.size(); ++i) {
      const double predicted = predict(xh, i), actual = held[i].loss;
      const double error = std::abs(predicted - actual) / actual;
      sum += error, worst = std::max(worst, error);
      rows.push_back({{"run", held[i].run},
                      {"N", held[i].N},
                      {"D", held[i].D},
                      {"loss", actual},
                      {"predicted", predicted},
                      {"abs_rel_error", error}});
    }
    const double mean = sum / static_cast<double>(xh.size());
    std::printf(
        "\nholdout: the %lld largest model size%s (%zu points) predicted with mean absolute "
        "relative error %.2f%%, max %.2f%%\n",
        static_cast<long long>(c.holdout), c.holdout > 1 ? "s" : "", held.size(), 100 * mean,
        100 * worst);
    out["holdout"] = {{"sizes", std::vector<double>(held_sizes.begin(), held_sizes.end())},
                      {"mean_abs_rel_error", mean},
                      {"max_abs_rel_error", worst},
                      {"points", rows}};
  }

  if (!c.plots) return;
  const fs::path dir = c.out_dir;
  std::ostringstream pts, res;
  for (int64_t i = 0; i < x.size(); ++i) {
    const double C = std::exp(x.log_C[i]), predicted = predict(x, i);
    if (!std::isfinite(C)) continue;
    pts << num(C, "%.10g") << ' ' << num(std::exp(x.log_loss[i]), "%.10g") << ' '
        << num(predicted, "%.10g") << '\n';
    res << num(C, "%.10g") << ' ' << num(x.log_loss[i] - std::log(predicted), "%.6g") << '\n';
  }
  if (pts.str().empty()) {
    warnings.push_back("no plots: the points have no compute C (nor N and D for 6 N D)");
    return;
  }
  write_text_file((dir / "points.dat").string(), "# C loss predicted\n" + pts.str());
  write_text_file((dir / "residuals.dat").string(), "# C log(loss) - log(predicted)\n" + res.str());
  std::string frontier;
  if (law.name == "chinchilla") {
    const Allocation a = chinchilla_allocation(r.theta);
    std::ostringstream f;
    for (int i = 0; i <= 60; ++i) {
      const double C = c_min * std::pow(c_max * 100 / c_min, i / 60.0);
      const double loss = r.parameters[0].second +
                          r.parameters[1].second / std::pow(a.N_opt(C), r.theta[3]) +
                          r.parameters[2].second / std::pow(a.D_opt(C), r.theta[4]);
      f << num(C, "%.10g") << ' ' << num(loss, "%.10g") << '\n';
    }
    write_text_file((dir / "frontier.dat").string(),
                    "# C loss at the compute-optimal N and D\n" + f.str());
    frontier = ", 'frontier.dat' using 1:2 with lines lw 2 title 'compute-optimal frontier'";
  }
  pngs.push_back(plot(dir, "loss_vs_compute",
                      "set logscale x\nset xlabel 'compute C (FLOPs)'\nset ylabel 'loss'\n"
                      "set title '" +
                          law.name + ": " + law.formula +
                          "'\n"
                          "plot 'points.dat' using 1:2 with points pt 7 ps 0.6 title 'points', "
                          "'points.dat' using 1:3 with points pt 6 ps 0.6 title 'fitted'" +
                          frontier + "\n",
                      warnings));
  pngs.push_back(plot(dir, "residuals",
                      "set logscale x\nset xlabel 'compute C (FLOPs)'\n"
                      "set ylabel 'log(loss) - log(fitted)'\n"
                      "plot 'residuals.dat' using 1:2 with points pt 7 ps 0.6 title 'residual', "
                      "0 with lines dt 2 notitle\n",
                      warnings));
  if (law.name == "parscale") {
    // The paper's reading (Chen et al. 2025): P streams act as a model of N (k ln P + 1)
    // parameters, so every point should fall on the one curve E + (A 1e9 / N_eff)^alpha.
    const double E = r.parameters[0].second, A = r.parameters[1].second;
    const double alpha = r.parameters[2].second, k = r.parameters[3].second;
    std::map<double, std::vector<const Point*>> by_streams;
    for (const auto& p : fitted)
      by_streams[p.P].push_back(&p);
    std::ostringstream data;
    std::string plots;
    double lo = INFINITY, hi = 0;
    int block = 0;
    for (const auto& [P, group] : by_streams) {
      for (const Point* p : group) {
        const double n_eff = p->N * (k * std::log(P) + 1);
        lo = std::min(lo, n_eff), hi = std::max(hi, n_eff);
        data << num(n_eff, "%.10g") << ' ' << num(p->loss, "%.10g") << '\n';
      }
      data << "\n\n";
      plots += "'effective.dat' index " + std::to_string(block++) +
               " with points pt 7 title 'P = " + num(P, "%g") + "', ";
    }
    std::ostringstream curve;
    for (int i = 0; i <= 60; ++i) {
      const double n_eff = lo / 1.5 * std::pow(hi * 1.5 / (lo / 1.5), i / 60.0);
      curve << num(n_eff, "%.10g") << ' ' << num(E + std::pow(A * 1e9 / n_eff, alpha), "%.10g")
            << '\n';
    }
    write_text_file((dir / "effective.dat").string(),
                    "# N (k ln P + 1), loss; one block per stream count P\n" + data.str());
    write_text_file((dir / "effective_fit.dat").string(),
                    "# N_eff, E + (A 1e9 / N_eff)^alpha\n" + curve.str());
    pngs.push_back(plot(dir, "loss_vs_effective_params",
                        "set logscale x\nset xlabel 'N (k ln P + 1), k = " + num(k, "%.3g") +
                            "'\nset ylabel 'loss'\nset key top right\n"
                            "set title 'streams as a parameter multiplier'\nplot " +
                            plots + "'effective_fit.dat' with lines lw 2 title 'fitted law'\n",
                        warnings));
  }
}

// ----- isoFLOP profiles (Approach 2) -----

void fit_isoflop(const FitCommand& c, const std::vector<Point>& points, json& out,
                 std::vector<std::string>& warnings, std::vector<std::string>& pngs) {
  const IsoflopResult iso = isoflop_profiles(points, warnings);
  std::printf("ladder fit: isoflop   (Hoffmann et al. 2022, Approach 2)\n");
  std::printf("%zu budgets with a minimum inside their model sizes (%s)\n\n", iso.budgets.size(),
              iso.interpolated ? "loss curves interpolated in log C" : "points grouped by C");
  std::printf("%12s %8s %14s %14s %10s\n", "C (FLOPs)", "models", "N_opt", "D_opt", "loss");
  json budgets = json::array();
  for (const auto& b : iso.budgets) {
    std::printf("%12s %8zu %14s %14s %10s\n", num(b.C, "%.3e").c_str(), b.N.size(),
                num(b.N_opt).c_str(), num(b.D_opt).c_str(), num(b.loss_opt, "%.4f").c_str());
    budgets.push_back({{"C", b.C},
                       {"models", b.N.size()},
                       {"N_opt", b.N_opt},
                       {"D_opt", b.D_opt},
                       {"loss_opt", b.loss_opt},
                       {"parabola_in_ln_N", {b.c0, b.c1, b.c2}}});
  }
  // Bootstrap over runs (a run is a point of published data, or a loss curve).
  std::vector<double> as, bs;
  int64_t failed = 0;
  uint64_t state = c.fit.seed ^ 0x69736f666c6f70ULL;  // "isoflop"
  for (int64_t k = 0; k < c.fit.bootstrap; ++k) {
    std::vector<std::string> ignored;
    try {
      const IsoflopResult b = isoflop_profiles(resample_runs(points, state), ignored);
      as.push_back(b.a), bs.push_back(b.b);
    } catch (const Error&) {
      ++failed;  // too few budgets with a minimum in this resample
    }
  }
  auto ci_text = [&](const std::vector<double>& v) -> std::string {
    if (v.empty()) return "";
    const Interval i = percentile_interval(v);
    return " [" + num(i.low) + ", " + num(i.high) + "]";
  };
  std::printf("\nN_opt ~ C^a with a = %s%s;  D_opt ~ C^b with b = %s%s\n", num(iso.a).c_str(),
              ci_text(as).c_str(), num(iso.b).c_str(), ci_text(bs).c_str());
  if (c.fit.bootstrap > 0)
    std::printf(
        "95%% intervals from %lld bootstrap resamples of the runs%s\n",
        static_cast<long long>(c.fit.bootstrap),
        failed ? (" (" + std::to_string(failed) + " without 2 usable budgets)").c_str() : "");
  out["law"] = "isoflop";
  out["formula"] = "N_opt = exp(log_N_coeff) C^a, D_opt = exp(log_D_coeff) C^b";
  out["parameters"] = {{"a", {{"value", iso.a}, {"ci95", ci95_json(as)}}},
                       {"log_N_coeff", {{"value", iso.log_N_coeff}}},
                       {"b", {{"value", iso.b}, {"ci95", ci95_json(bs)}}},
                       {"log_D_coeff", {{"value", iso.log_D_coeff}}}};
  out["interpolated"] = iso.interpolated;
  out["budgets"] = budgets;
  out["settings"] = {{"inputs", c.inputs},
                     {"bootstrap", c.fit.bootstrap},
                     {"bootstrap_failed", failed},
                     {"seed", c.fit.seed},
                     {"drop_first", c.points.drop_first},
                     {"final_only", c.points.final_only},
                     {"filters", c.points.filters}};
  if (!c.plots) return;
  std::vector<ParabolaGroup> groups;
  for (const auto& b : iso.budgets)
    groups.push_back({"C = " + num(b.C, "%.2e"), b.N, b.loss, b.c0, b.c1, b.c2});
  pngs.push_back(plot_parabolas(c.out_dir, "isoflop", "parameters N", "loss", groups, warnings));
}

// ----- Learning-rate transfer -----

void fit_transfer(const FitCommand& c, const std::vector<Point>& points, json& out,
                  std::vector<std::string>& warnings, std::vector<std::string>& pngs) {
  const bool lr = c.transfer == "lr";
  const std::string key = lr ? "lr" : "wd";  // of the JSON and the plot
  const std::string what = lr ? "learning rate" : "weight decay";
  const std::string& axis = c.transfer_axis;  // "width" or "depth"
  const std::string axes = axis + "s";        // the JSON's list: "widths", "depths"
  const Transfer t = transfer(points, c.transfer, warnings, axis);
  std::printf(
      "ladder fit --%s-transfer: loss against log %s, a parabola per %s (around its "
      "best run)\n\n",
      key.c_str(), what.c_str(), axis.c_str());
  std::printf("%10s %6s %12s %10s\n", axis.c_str(), "runs", (key + "_opt").c_str(), "loss");
  json curves = json::array();
  for (const auto& curve : t.curves) {
    std::printf("%10s %6zu %12s %10s\n", num(curve.at, "%.0f").c_str(), curve.value.size(),
                num(curve.value_opt).c_str(), num(curve.loss_opt, "%.4f").c_str());
    curves.push_back({{axis, curve.at},
                      {"runs", curve.value.size()},
                      {key + "_opt", curve.value_opt},
                      {"loss_opt", curve.loss_opt},
                      {"parabola_in_ln_" + key, {curve.c0, curve.c1, curve.c2}}});
  }
  // Bootstrap over runs: intervals for each width's (depth's) optimum and for the spread.
  std::map<double, std::vector<double>> optima;
  std::vector<double> spreads;
  uint64_t state = c.fit.seed ^ 0x6c727472616e73ULL;  // "lrtrans"
  for (int64_t k = 0; k < c.fit.bootstrap; ++k) {
    std::vector<std::string> ignored;
    try {
      const Transfer b = transfer(resample_runs(points, state), c.transfer, ignored, axis);
      for (const auto& curve : b.curves)
        optima[curve.at].push_back(curve.value_opt);
      if (b.curves.size() == t.curves.size()) spreads.push_back(b.spread);
    } catch (const Error&) {
      // no width (depth) with a usable sweep in this resample
    }
  }
  for (size_t k = 0; k < t.curves.size(); ++k) {
    const auto& v = optima[t.curves[k].at];
    if (v.empty()) continue;
    const Interval i = percentile_interval(v);
    curves[k][key + "_opt_ci95"] = ci95_json(v);
    std::printf("  %s %s: %s_opt 95%% interval [%s, %s] (%zu of %lld resamples)\n", axis.c_str(),
                num(t.curves[k].at, "%.0f").c_str(), key.c_str(), num(i.low).c_str(),
                num(i.high).c_str(), v.size(), static_cast<long long>(c.fit.bootstrap));
  }
  std::printf("\nspread of the optimal %s across %s: %.3gx (max / min)", what.c_str(), axes.c_str(),
              t.spread);
  if (!spreads.empty()) {
    const Interval i = percentile_interval(spreads);
    std::printf(", 95%% interval [%.3g, %.3g]", i.low, i.high);
  }
  std::printf("\n");
  out[key + "_transfer"] = {
      {"along", axis}, {axes, curves}, {"spread", t.spread}, {"spread_ci95", ci95_json(spreads)}};
  out["settings"] = {{"inputs", c.inputs},
                     {"bootstrap", c.fit.bootstrap},
                     {"seed", c.fit.seed},
                     {"filters", c.points.filters}};
  if (!c.plots) return;
  std::vector<ParabolaGroup> groups;
  for (const auto& cv : t.curves)
    groups.push_back({axis + " " + num(cv.at, "%.0f"), cv.value, cv.loss, cv.c0, cv.c1, cv.c2});
  pngs.push_back(
      plot_parabolas(c.out_dir, key + "_transfer", what, "final loss", groups, warnings));
}

// Tics of a log axis spanning [lo, hi] within two decades, as factors (gnuplot labels only the
// decades by default, which leaves such an axis with one label or none).
std::string log_tics(const std::string& axis, const std::vector<double>& values) {
  if (values.empty()) return "";
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  const double ratio = *hi / *lo;
  if (!(ratio > 0) || ratio >= 100) return "";
  return "set " + axis + "tics " + (ratio < 10 ? "1.5" : "2") + "\n";
}

// --law hyperparameters (scaling/hyperparameters.h): the optimum of each hyperparameter the runs
// vary, per (N, D) cell, as a power law.
void fit_hyperparameters(const FitCommand& c, const std::vector<Point>& points, json& out,
                         std::vector<std::string>& warnings, std::vector<std::string>& pngs) {
  // The hyperparameters the runs vary.
  std::vector<std::string> varied;
  for (const char* h : {"lr", "batch"}) {
    std::set<double> values;
    for (const auto& p : points)
      if (hyperparameter_value(p, h) > 0) values.insert(hyperparameter_value(p, h));
    if (values.size() > 1) varied.push_back(h);
  }
  if (varied.empty())
    throw Error("--law hyperparameters",
                "the runs vary neither the learning rate (lr) nor the batch (batch_tokens); " +
                    std::to_string(run_count(points)) + " runs, from " + points.front().run);
  std::printf(
      "ladder fit: hyperparameters   h_opt = a %s   (per (N, D) cell: a parabola in ln h)\n",
      c.in_compute ? "C^gamma" : "N^alpha D^beta");
  json laws = json::array();
  std::vector<HyperparameterCell> lr_cells;  // for the loss surface below
  std::vector<std::string> not_fitted;
  for (const std::string& h : varied) {
    std::vector<HyperparameterCell> cells = optimum_cells(points, h, warnings);
    if (h == "lr") lr_cells = cells;
    // With two hyperparameters varied, one that cannot be fitted (every optimum at an edge of its
    // grid, too few cells) is a warning, and the other's law still comes out.
    try {
      if (cells.empty())
        throw Error("--law hyperparameters",
                    h + ": no cell has its optimum inside its grid (warnings name them)");
      // --holdout K: the K cells of the largest compute stay out and are predicted.
      const int64_t held = std::min<int64_t>(c.holdout, static_cast<int64_t>(cells.size()));
      const std::vector<HyperparameterCell> fitted(cells.begin(), cells.end() - held);
      const HyperparameterLaw law = fit_optimum_law(fitted, h, c.in_compute);
      // Bootstrap over runs: the cells and the law again.
      std::map<std::string, std::vector<double>> boot;
      std::vector<double> boot_coefficient;
      uint64_t state = c.fit.seed ^ 0x68797065727061ULL;  // "hyperpa"
      for (int64_t b = 0; b < c.fit.bootstrap; ++b) {
        std::vector<std::string> ignored;
        try {
          auto resampled = optimum_cells(resample_runs(points, state), h, ignored);
          std::sort(resampled.begin(), resampled.end(),
                    [](const auto& x, const auto& y) { return x.N * x.D < y.N * y.D; });
          // The same cells held out: those above the largest fitted compute.
          const double top = fitted.back().N * fitted.back().D * 1.02;
          std::erase_if(resampled, [&](const auto& x) { return x.N * x.D > top; });
          const HyperparameterLaw bl = fit_optimum_law(resampled, h, c.in_compute);
          if (bl.exponents.size() != law.exponents.size()) continue;
          for (const auto& [v, e] : bl.exponents)
            boot[v].push_back(e);
          boot_coefficient.push_back(std::exp(bl.log_coefficient));
        } catch (const Error&) {
          // a resample without enough cells
        }
      }
      std::printf("\n%s: %zu cells fitted%s\n", h.c_str(), fitted.size(),
                  held ? (", " + std::to_string(held) + " held out").c_str() : "");
      std::printf("  %-14s %12s   %s\n", "parameter", "value",
                  c.fit.bootstrap > 0 ? "95% interval" : "");
      const double coefficient = std::exp(law.log_coefficient);
      std::printf("  %-14s %12s   %s\n", "coefficient", num(coefficient, "%.5g").c_str(),
                  boot_coefficient.empty()
                      ? ""
                      : ("[" + num(percentile_interval(boot_coefficient).low) + ", " +
                         num(percentile_interval(boot_coefficient).high) + "]")
                            .c_str());
      json exponents = json::object(), exponents_ci = json::object();
      for (const auto& [v, e] : law.exponents) {
        const auto& values = boot[v];
        std::printf("  %-14s %12s   %s\n", ("exponent " + v).c_str(), num(e, "%.4g").c_str(),
                    values.empty() ? ""
                                   : ("[" + num(percentile_interval(values).low) + ", " +
                                      num(percentile_interval(values).high) + "]")
                                         .c_str());
        exponents[v] = e;
        exponents_ci[v] = ci95_json(values);
      }
      std::printf("  %10s %10s %12s %10s %10s%s\n", "N", "D", (h + "_opt").c_str(), "predicted",
                  "loss", h == "lr" ? "   timescale" : "");
      json cell_rows = json::array();
      std::string dat;
      for (size_t i = 0; i < cells.size(); ++i) {
        const auto& cell = cells[i];
        const bool is_held = i >= fitted.size();
        const double predicted = law.predict(cell.N, cell.D);
        std::printf("  %10s %10s %12s %10s %10s%s%s\n", num(cell.N, "%.3g").c_str(),
                    num(cell.D, "%.3g").c_str(), num(cell.optimum, "%.4g").c_str(),
                    num(predicted, "%.4g").c_str(), num(cell.loss_at_optimum, "%.4f").c_str(),
                    h == "lr" ? ("   " + num(cell.timescale(), "%.4g")).c_str() : "",
                    is_held ? "   (held out)" : "");
        json row = {{"N", cell.N},
                    {"D", cell.D},
                    {"C", 6 * cell.N * cell.D},
                    {"optimum", cell.optimum},
                    {"predicted", predicted},
                    {"loss_at_optimum", cell.loss_at_optimum},
                    {"held_out", is_held},
                    {"runs", cell.runs},
                    {"values", cell.value},
                    {"losses", cell.loss}};
        if (h == "lr") row["timescale"] = cell.timescale();
        cell_rows.push_back(row);
        dat += num(6 * cell.N * cell.D, "%.6g") + " " + num(cell.optimum, "%.6g") + " " +
               num(predicted, "%.6g") + " " + (is_held ? "1" : "0") + "\n";
      }
      json entry = {{"hyperparameter", h},
                    {"coefficient", coefficient},
                    {"coefficient_ci95", ci95_json(boot_coefficient)},
                    {"exponents", exponents},
                    {"exponents_ci95", exponents_ci},
                    {"cells", cell_rows}};
      // Power Lines: the timescale at each learning-rate optimum against tokens per parameter.
      if (h == "lr") {
        std::vector<std::vector<double>> rows;
        std::vector<double> y;
        for (const auto& cell : fitted)
          if (std::isfinite(cell.timescale()))
            rows.push_back({1.0, std::log(cell.D / cell.N)}),
                y.push_back(std::log(cell.timescale()));
        std::vector<double> t;
        std::set<double> ratios;
        for (const auto& r : rows)
          ratios.insert(std::round(r[1] * 100));
        if (ratios.size() >= 2 && least_squares(rows, y, t)) {
          std::printf("  timescale tau = B / (lr_opt weight_decay D) = %s (D/N)^%s\n",
                      num(std::exp(t[0]), "%.4g").c_str(), num(t[1], "%.3g").c_str());
          entry["timescale"] = {{"formula", "tau = B / (lr_opt weight_decay D) = t (D/N)^rho"},
                                {"t", std::exp(t[0])},
                                {"rho", t[1]}};
        }
      }
      laws.push_back(entry);
      if (c.plots) {
        std::ofstream(fs::path(c.out_dir) / (h + "_optimum.dat"))
            << "# C optimum predicted held_out\n"
            << dat;
        std::vector<double> optima;
        for (const auto& cell : cells)
          optima.push_back(cell.optimum), optima.push_back(law.predict(cell.N, cell.D));
        const std::string body =
            "set logscale xy\n" + log_tics("y", optima) +
            "set format y '%.2g'\nset xlabel 'compute C = 6 N D (FLOPs)'\n"
            "set ylabel 'optimal " +
            h + "'\nset title 'optimal " + h +
            " per (N, D) cell'\n"
            "plot '" +
            h +
            "_optimum.dat' using 1:($4 == 0 ? $2 : 1/0) with points pt 7 title "
            "'cell optimum', '" +
            h +
            "_optimum.dat' using 1:($4 == 1 ? $2 : 1/0) with points pt 6 "
            "ps 2 title 'held out', '" +
            h +
            "_optimum.dat' using 1:3 with points pt 2 title "
            "'fitted law'\n";
        pngs.push_back(plot(c.out_dir, h + "_optimum", body, warnings));
      }
    } catch (const Error& e) {
      if (varied.size() == 1) throw;
      warnings.push_back(std::string(e.what()) + "; its law is not fitted");
      not_fitted.push_back(h);
    }
  }
  if (laws.empty())
    throw Error("--law hyperparameters",
                "neither the learning rate nor the batch could be fitted (the warnings say why)");
  // The loss surface of the cell of most compute that varies both, against lr and batch.
  if (c.plots && varied.size() == 2) {
    for (auto it = lr_cells.rbegin(); it != lr_cells.rend(); ++it) {
      std::set<double> batches;
      for (const auto& s : it->surface)
        batches.insert(s[1]);
      if (batches.size() < 2) continue;
      std::string dat = "# lr batch loss\n";
      for (const auto& s : it->surface)
        dat += num(s[0], "%.6g") + " " + num(s[1], "%.6g") + " " + num(s[2], "%.6g") + "\n";
      std::ofstream(fs::path(c.out_dir) / "loss_surface.dat") << dat;
      std::vector<double> lrs, batch_values;
      for (const auto& point : it->surface)
        lrs.push_back(point[0]), batch_values.push_back(point[1]);
      const std::string body =
          "set logscale xy\n" + log_tics("x", lrs) + log_tics("y", batch_values) +
          "set format x '%.2g'\nset format y '%.0f'\nset xlabel 'lr'\n"
          "set ylabel 'batch (tokens)'\nset cblabel 'final loss'\nset palette rgb 33,13,10\n"
          "set title 'loss surface of the cell N = " +
          num(it->N, "%.3g") + ", D = " + num(it->D, "%.3g") +
          "'\nplot 'loss_surface.dat' using 1:2:3 with points pt 5 ps 3 "
          "palette notitle\n";
      pngs.push_back(plot(c.out_dir, "loss_surface", body, warnings));
      break;
    }
  }
  out["law"] = "hyperparameters";
  out["hyperparameters"] = laws;
  out["not_fitted"] = not_fitted;
  out["settings"] = {{"inputs", c.inputs},         {"bootstrap", c.fit.bootstrap},
                     {"seed", c.fit.seed},         {"holdout", c.holdout},
                     {"in_compute", c.in_compute}, {"filters", c.points.filters}};
}

// --law mixture (scaling/mixture.h): one law per eval set over the runs' mixtures.
void fit_mixture(const FitCommand& c, json& out, std::vector<std::string>& warnings,
                 std::vector<std::string>& pngs) {
  // The sets: --eval SET, else every eval set the runs share.
  PointOptions options = c.points;
  options.final_only = true;
  std::vector<std::string> sets;
  std::vector<Point> first;
  {
    PointOptions plain = options;
    plain.eval_set = "";
    first = load_points(c.inputs, plain, warnings);
  }
  if (first.empty()) throw Error("ladder fit", "no points left after reading the inputs");
  if (!c.points.eval_set.empty()) {
    sets = {c.points.eval_set};
  } else {
    std::istringstream names(first.front().attributes.count("eval_sets")
                                 ? first.front().attributes.at("eval_sets")
                                 : "");
    for (std::string name; names >> name;)
      sets.push_back(name);
    if (sets.empty())
      throw Error(first.front().run,
                  "--law mixture fits the loss of each eval set (eval.sets), and this run has "
                  "none; give --eval SET or train with eval.sets");
  }
  // The sources and each run's weights, from its data_mixture attribute.
  std::vector<std::string> sources;
  auto weights_of = [&](const Point& p) {
    const auto it = p.attributes.find("data_mixture");
    if (it == p.attributes.end() || it->second.empty())
      throw Error(p.run, "trained on no mixture (data.mixture): not a point of --law mixture");
    const auto mixture = parse_mixture(it->second, p.run);
    if (sources.empty())
      for (const auto& [name, w] : mixture)
        sources.push_back(name);
    std::vector<double> r(sources.size(), 0.0);
    if (mixture.size() != sources.size())
      throw Error(p.run, "mixes other sources (" + it->second + ") than the first run (" +
                             join(sources, " ") + ")");
    for (const auto& [name, w] : mixture) {
      const auto at = std::find(sources.begin(), sources.end(), name);
      if (at == sources.end())
        throw Error(p.run, "mixes other sources (" + it->second + ") than the first run (" +
                               join(sources, " ") + ")");
      r[at - sources.begin()] = w;
    }
    return r;
  };
  for (const auto& p : first)
    weights_of(p);
  if (sources.size() < 2) throw Error("--law mixture", "the runs mix fewer than two sources");
  const Law law = mixture_law(sources);
  const int64_t runs = static_cast<int64_t>(first.size());
  const int64_t needed = static_cast<int64_t>(law.variables.size()) + 1;
  if (c.holdout < 0 || runs - c.holdout < needed)
    throw Error("--law mixture", std::to_string(runs) + " runs, " + std::to_string(c.holdout) +
                                     " held out: the law of " + std::to_string(sources.size()) +
                                     " sources has " + std::to_string(law.variables.size()) +
                                     " parameters and needs at least " + std::to_string(needed) +
                                     " runs to fit");

  std::printf("ladder fit: mixture   %s   (Ye et al. 2024)\n", law.formula.c_str());
  std::printf(
      "%lld runs (%lld held out: the last of the inputs); sources %s; sets %s; %lld "
      "bootstrap resamples\n",
      static_cast<long long>(runs), static_cast<long long>(c.holdout), join(sources, ", ").c_str(),
      join(sets, ", ").c_str(), static_cast<long long>(c.fit.bootstrap));
  json per_set = json::object(), held_out = json::array();
  std::vector<std::vector<double>> thetas;
  std::vector<std::vector<std::vector<double>>> boot;  // per set, per resample
  std::vector<std::vector<double>> held_r;
  std::vector<std::vector<double>> held_measured(sets.size());
  std::vector<std::string> held_runs;
  std::string scatter;  // measured against predicted, every set and run
  for (size_t s = 0; s < sets.size(); ++s) {
    options.eval_set = sets[s];
    const std::vector<Point> points = load_points(c.inputs, options, warnings);
    if (static_cast<int64_t>(points.size()) != runs)
      throw Error("--eval " + sets[s], std::to_string(points.size()) + " runs have this set, " +
                                           std::to_string(runs) + " runs in all");
    Features fit, held;
    for (int64_t i = 0; i < runs; ++i) {
      Features& into = i < runs - c.holdout ? fit : held;
      into.log_loss.push_back(std::log(points[i].loss));
      into.mixture.push_back(weights_of(points[i]));
      if (i >= runs - c.holdout) {
        held_measured[s].push_back(points[i].loss);
        if (s == 0) held_runs.push_back(points[i].run), held_r.push_back(into.mixture.back());
      }
    }
    const FitResult r = fit_law(law, fit, c.fit);
    thetas.push_back(r.theta);
    boot.push_back(r.bootstrap_theta);
    std::printf("\nset %s: %lld runs, objective %s (gradient norm %s)\n", sets[s].c_str(),
                static_cast<long long>(r.points), num(r.objective, "%.4g").c_str(),
                num(r.gradient_norm, "%.2g").c_str());
    std::printf("  %-20s %12s   %s\n", "parameter", "value",
                c.fit.bootstrap > 0 ? "95% interval" : "");
    json params = json::object();
    for (const auto& [name, value] : r.parameters) {
      std::printf("  %-20s %12s   %s\n", name.c_str(), num(value, "%.5g").c_str(),
                  interval_text(r, name).c_str());
      params[name] = {{"value", value}, {"ci95", interval_json(r, name)}};
    }
    double worst = 0;
    for (int64_t i = 0; i < fit.size(); ++i) {
      const double predicted = mixture_loss(r.theta, fit.mixture[i]);
      worst = std::max(worst, std::abs(predicted / std::exp(fit.log_loss[i]) - 1));
      scatter += num(predicted, "%.6g") + " " + num(std::exp(fit.log_loss[i]), "%.6g") + " " +
                 std::to_string(s) + " 0\n";
    }
    std::printf("  largest relative error of the fitted runs: %.3g%%\n", 100 * worst);
    per_set[sets[s]] = {{"parameters", params},
                        {"objective", r.objective},
                        {"gradient_norm", r.gradient_norm},
                        {"points", r.points},
                        {"bootstrap_failed", r.bootstrap_failed},
                        {"max_relative_error", worst}};
  }
  // Held-out runs: each set's prediction against its measured loss.
  for (size_t h = 0; h < held_runs.size(); ++h) {
    json row = {{"run", held_runs[h]}, {"weights", held_r[h]}};
    std::printf("\nheld out %s (", held_runs[h].c_str());
    for (size_t j = 0; j < sources.size(); ++j)
      std::printf("%s%s %.3g", j ? ", " : "", sources[j].c_str(), held_r[h][j]);
    std::printf("):\n");
    for (size_t s = 0; s < sets.size(); ++s) {
      const double predicted = mixture_loss(thetas[s], held_r[h]);
      const double measured = held_measured[s][h];
      std::printf("  %-20s predicted %.4f, measured %.4f (%+.2f%%)\n", sets[s].c_str(), predicted,
                  measured, 100 * (predicted / measured - 1));
      row[sets[s]] = {{"predicted", predicted}, {"measured", measured}};
      scatter +=
          num(predicted, "%.6g") + " " + num(measured, "%.6g") + " " + std::to_string(s) + " 1\n";
    }
    held_out.push_back(row);
  }
  // The mixture the fitted laws recommend: the lowest mean predicted loss over the sets (one set
  // with --eval), and how much it moves over the bootstrap fits (paired resample by resample: the
  // same rows were drawn for every set).
  const std::vector<double> best = best_mixture(thetas, sources.size());
  json optimum = {{"target", sets.size() == 1 ? sets[0] : "mean of " + join(sets, ", ")}};
  std::printf("\nrecommended mixture (lowest %s):", sets.size() == 1
                                                        ? ("predicted loss on " + sets[0]).c_str()
                                                        : "mean predicted loss over the sets");
  std::vector<std::vector<double>> best_boot;
  bool paired = true;
  for (const auto& b : boot)
    paired = paired && b.size() == boot[0].size();
  if (paired)
    for (size_t b = 0; b < boot[0].size(); ++b) {
      std::vector<std::vector<double>> laws;
      for (const auto& set_boot : boot)
        laws.push_back(set_boot[b]);
      best_boot.push_back(best_mixture(laws, sources.size()));
    }
  json weights = json::object();
  for (size_t j = 0; j < sources.size(); ++j) {
    std::vector<double> values;
    for (const auto& w : best_boot)
      values.push_back(w[j]);
    std::printf("%s %s %.3f", j ? "," : "", sources[j].c_str(), best[j]);
    if (!values.empty()) {
      const Interval i = percentile_interval(values);
      std::printf(" [%.2f, %.2f]", i.low, i.high);
    }
    weights[sources[j]] = {{"value", best[j]}, {"ci95", ci95_json(values)}};
  }
  std::printf("\n");
  json predicted = json::object();
  for (size_t s = 0; s < sets.size(); ++s) {
    predicted[sets[s]] = mixture_loss(thetas[s], best);
    std::printf("  %-20s predicted %.4f\n", sets[s].c_str(), mixture_loss(thetas[s], best));
  }
  optimum["weights"] = weights;
  optimum["predicted"] = predicted;
  out["law"] = "mixture";
  out["formula"] = law.formula;
  out["sources"] = sources;
  out["sets"] = per_set;
  out["held_out"] = held_out;
  out["optimum"] = optimum;
  out["settings"] = {{"inputs", c.inputs},           {"huber_delta", c.fit.huber_delta},
                     {"bootstrap", c.fit.bootstrap}, {"seed", c.fit.seed},
                     {"holdout", c.holdout},         {"filters", c.points.filters}};
  if (!c.plots) return;
  // Measured against predicted, each set its own colour, with the line of equality.
  std::ofstream(fs::path(c.out_dir) / "mixture_fit.dat") << "# predicted measured set held_out\n"
                                                         << scatter;
  std::string body =
      "set format x '%.3g'\nset format y '%.3g'\nset xlabel 'predicted loss'\n"
      "set ylabel 'measured loss'\nset title 'data-mixing law: each run and eval set'\nset key top "
      "left\n"
      "plot x with lines dt 2 lc rgb 'gray' title 'y = x'";
  for (size_t s = 0; s < sets.size(); ++s) {
    const std::string set = std::to_string(s), colour = " lc " + std::to_string(s + 1);
    body += ", 'mixture_fit.dat' using 1:($3 == " + set +
            " && $4 == 0 ? $2 : 1/0) with points pt 7" + colour + " title '" + sets[s] + "'";
    if (!held_runs.empty())
      body += ", 'mixture_fit.dat' using 1:($3 == " + set +
              " && $4 == 1 ? $2 : 1/0) with points pt 6 ps 2.5" + colour + " title '" + sets[s] +
              ", held out'";
  }
  pngs.push_back(plot(c.out_dir, "mixture_fit", body + "\n", warnings));
}

}  // namespace

int run_fit(const FitCommand& c) {
  if (c.inputs.empty()) throw Error("ladder fit", "give run folders, trace.h5 or CSV files");
  if (c.law != "isoflop" && c.law != "mixture" && c.law != "hyperparameters" && c.transfer.empty())
    law_named(c.law);  // an unknown law fails first
  if (c.holdout < 0) throw Error("--holdout", "must be >= 0");
  if (std::find(transfer_axes().begin(), transfer_axes().end(), c.transfer_axis) ==
      transfer_axes().end())
    throw Error("--along " + c.transfer_axis, "the axis of a transfer is width or depth");
  if (c.transfer.empty() && c.transfer_axis != "width")
    throw Error("--along " + c.transfer_axis, "goes with --lr-transfer or --wd-transfer");
  if (c.fit.bootstrap < 0) throw Error("--bootstrap", "must be >= 0");
  if (!(c.fit.huber_delta > 0)) throw Error("--delta", "must be > 0");
  // The mixture law reads the points of each eval set itself.
  const bool mixture = c.transfer.empty() && c.law == "mixture";
  PointOptions options = c.points;
  if (!c.transfer.empty() || c.law == "hyperparameters") options.final_only = true;
  std::vector<std::string> warnings;
  const std::vector<Point> points =
      mixture ? std::vector<Point>{} : load_points(c.inputs, options, warnings);
  for (const auto& w : warnings)
    std::fprintf(stderr, "ladder: warning: %s\n", w.c_str());
  const size_t loaded_warnings = warnings.size();
  if (points.empty() && !mixture)
    throw Error("ladder fit", "no points left after reading and filtering the inputs");

  create_output_folder(c.out_dir);
  const bool plots = c.plots && gnuplot_installed();
  FitCommand command = c;
  command.plots = plots;
  json out;
  out["ladder_fit"] = 1;
  std::vector<std::string> pngs;
  if (!c.transfer.empty())
    fit_transfer(command, points, out, warnings, pngs);
  else if (c.law == "isoflop")
    fit_isoflop(command, points, out, warnings, pngs);
  else if (mixture)
    fit_mixture(command, out, warnings, pngs);
  else if (c.law == "hyperparameters")
    fit_hyperparameters(command, points, out, warnings, pngs);
  else
    fit_a_law(command, points, out, warnings, pngs);
  for (size_t i = loaded_warnings; i < warnings.size(); ++i)
    std::fprintf(stderr, "ladder: warning: %s\n", warnings[i].c_str());
  out["warnings"] = warnings;
  const fs::path json_path = fs::path(c.out_dir) / "fit.json";
  write_text_file(json_path.string(), out.dump(2) + "\n");
  std::printf("\nwrote %s", json_path.string().c_str());
  for (const auto& png : pngs)
    if (!png.empty()) std::printf(", %s", (fs::path(c.out_dir) / png).string().c_str());
  if (c.plots && !plots) std::printf(" (no plots: gnuplot is not installed)");
  std::printf("\n");
  return 0;
}

}  // namespace ladder::scaling
