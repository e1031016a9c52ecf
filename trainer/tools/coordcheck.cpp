#include "trainer/tools/coordcheck.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/files.h"
#include "core/format.h"
#include "core/plot.h"
#include "data/dataset.h"
#include "models/model.h"
#include "trainer/recipe/recipe.h"
#include "trainer/run/run_context.h"

namespace ladder {
namespace fs = std::filesystem;
namespace {

// The layer types in the order they are printed and plotted.
const std::vector<std::string> kLayerTypes = {"embedding", "attention", "mlp", "residual",
                                              "logits"};

// mean |x| per (width, step, layer type), summed over seeds (divided when read).
using Coords = std::map<std::tuple<int64_t, int64_t, std::string>, double>;

// Trains the recipe's model at one width for `steps` steps, recording the probe before each
// update: the trainer's own model, initialisation and AdamW (trainer/run/run_context.h), one
// micro-batch a step at the constant peak rate (a warmup would hide the first updates the check is
// about).
void check_width(const Recipe& r, const std::shared_ptr<data::TokenDataset>& dataset, int64_t steps,
                 const parallel::Communicator& world, std::ofstream& csv, Coords& coords) {
  RunData data;
  data.train = dataset;
  RunContext run(r, world, std::move(data));
  models::CoordinateProbe probe;
  run.model->set_probe(&probe);
  for (int64_t step = 0; step < steps; ++step) {
    run.grads->zero_grad();
    probe.clear();
    const torch::Tensor batch = run.loader.rows(step, 0, r.train.micro_batch);
    const models::ModelOutput out =
        run.model->loss(batch.slice(1, 0, r.data.seq_len), batch.slice(1, 1));
    out.objective.backward();
    run.optimizer->step(r.optim.lr);
    for (const auto& [layer, value] : probe.means()) {
      csv << r.model.d_model << ',' << r.run.seed << ',' << step << ',' << layer << ','
          << shortest_float(value) << '\n';
      coords[{r.model.d_model, step, layer}] += value;
    }
  }
}

std::string plot_script(const std::vector<int64_t>& widths, int64_t steps,
                        const std::string& parametrization) {
  const auto [low, high] = std::minmax_element(widths.begin(), widths.end());
  std::string s = "set multiplot layout 2,3 title 'coordinate check (" + parametrization +
                  "): mean |output| against width, one line per step'\nset logscale xy\n"
                  "set grid\nset key top left reverse Left font ',7' samplen 1 spacing 0.8\n"
                  "set xrange [" +
                  std::to_string(*low / 1.25) + ":" + std::to_string(*high * 1.25) +
                  "]\nset format y '%g'\nset xtics font ',8' (";
  for (size_t i = 0; i < widths.size(); ++i)
    s += (i ? ", " : "") + std::string("'") + std::to_string(widths[i]) + "' " +
         std::to_string(widths[i]);
  s += ")\nset datafile separator ','\n";
  for (const auto& layer : kLayerTypes) {
    s += "set title '" + layer + "'\nplot ";
    for (int64_t t = 0; t < steps; ++t)
      s += std::string(t ? ", " : "") + "'coords_mean.csv' using 1:($2 == " + std::to_string(t) +
           " && strcol(3) eq '" + layer + "' ? $4 : 1/0) with linespoints title 'step " +
           std::to_string(t) + "'";
    s += "\n";
  }
  return s + "unset multiplot\n";
}

}  // namespace

double loglog_slope(const std::vector<double>& widths, const std::vector<double>& values) {
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < widths.size() && i < values.size(); ++i) {
    if (!(values[i] > 0) || !(widths[i] > 0)) continue;
    const double x = std::log(widths[i]), y = std::log(values[i]);
    n += 1, sx += x, sy += y, sxx += x * x, sxy += x * y;
  }
  const double denominator = n * sxx - sx * sx;
  if (n < 2 || denominator <= 0) return std::numeric_limits<double>::quiet_NaN();
  return (n * sxy - sx * sy) / denominator;
}

int run_coordcheck(const CoordcheckOptions& o) {
  if (o.widths.size() < 2) throw Error("--widths", "needs at least two widths");
  for (int64_t w : o.widths)
    if (w < 1) throw Error("--widths", "widths must be >= 1; got " + std::to_string(w));
  if (std::set<int64_t>(o.widths.begin(), o.widths.end()).size() != o.widths.size())
    throw Error("--widths", "widths must differ");
  if (o.steps < 1) throw Error("--steps", "must be >= 1");
  if (o.seeds < 1) throw Error("--seeds", "must be >= 1");
  const Recipe base = load_recipe(o.recipe, {o.overrides, 1, {}});
  // Every width's recipe is loaded (and so validated) before any training.
  const double ffn_ratio =
      static_cast<double>(base.model.ffn_hidden) / static_cast<double>(base.model.d_model);
  const double expert_ratio =
      static_cast<double>(base.model.moe.expert_ffn) / static_cast<double>(base.model.d_model);
  std::vector<Recipe> recipes;
  for (int64_t w : o.widths)
    for (int64_t s = 0; s < o.seeds; ++s) {
      std::vector<std::string> overrides = o.overrides, origins(o.overrides.size());
      overrides.push_back("model.d_model=" + std::to_string(w));
      overrides.push_back("model.ffn_hidden=" +
                          std::to_string(std::max<int64_t>(1, std::llround(ffn_ratio * w))));
      overrides.push_back("run.seed=" + std::to_string(base.run.seed + s));
      if (base.model.experts() > 0)  // experts' hidden size in proportion too
        overrides.push_back("moe.expert_ffn=" +
                            std::to_string(std::max<int64_t>(1, std::llround(expert_ratio * w))));
      origins.resize(overrides.size(), "--widths " + std::to_string(w));
      try {
        recipes.push_back(load_recipe(o.recipe, {overrides, 1, origins}));
      } catch (const Error& e) {
        throw Error("--widths",
                    "width " + std::to_string(w) + ": " + e.where() + ": " + e.detail());
      }
    }
  const auto dataset = std::make_shared<data::TokenDataset>(base.data.path, "train");
  const std::string out =
      o.out_dir.empty() ? (fs::path("coordcheck") / fs::path(o.recipe).stem()).string() : o.out_dir;
  create_output_folder(out);
  at::set_num_threads(o.threads > 0
                          ? o.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const char* parametrization = choice_name(optim::kParametrizationNames, base.mup.parametrization);
  spdlog::info("coordcheck: {} ({}), widths {}, {} steps at lr {}, {} seed(s), {} threads",
               o.recipe, parametrization, o.widths.size(), o.steps, shortest_float(base.optim.lr),
               o.seeds, at::get_num_threads());

  const parallel::Communicator world = parallel::Communicator::world();
  Coords coords;
  {
    std::ofstream csv(fs::path(out) / "coords.csv");
    csv << "width,seed,step,layer,mean_abs\n";
    for (const Recipe& r : recipes) {
      spdlog::info("width {} seed {}", r.model.d_model, r.run.seed);
      check_width(r, dataset, o.steps, world, csv, coords);
    }
    if (!csv) throw Error((fs::path(out) / "coords.csv").string(), "cannot write the file");
  }

  // Means over seeds, and each layer type's slope per step.
  std::vector<double> widths(o.widths.begin(), o.widths.end());
  std::ofstream mean_csv(fs::path(out) / "coords_mean.csv"),
      slope_csv(fs::path(out) / "slopes.csv");
  mean_csv << "width,step,layer,mean_abs\n";
  slope_csv << "step,layer,slope\n";
  std::map<std::pair<std::string, int64_t>, double> slopes;
  for (const auto& layer : kLayerTypes)
    for (int64_t t = 0; t < o.steps; ++t) {
      std::vector<double> values;
      for (int64_t w : o.widths) {
        const auto it = coords.find({w, t, layer});
        const double v = it == coords.end() ? 0.0 : it->second / static_cast<double>(o.seeds);
        values.push_back(v);
        mean_csv << w << ',' << t << ',' << layer << ',' << shortest_float(v) << '\n';
      }
      slopes[{layer, t}] = loglog_slope(widths, values);
      slope_csv << t << ',' << layer << ',' << shortest_float(slopes[{layer, t}]) << '\n';
    }
  mean_csv.close(), slope_csv.close();

  // The table: one row per layer type, one column per step.
  std::printf("\nlog-log slope of mean |output| against width (%s, widths", parametrization);
  for (int64_t w : o.widths)
    std::printf(" %lld", static_cast<long long>(w));
  std::printf(")\n%-10s", "layer");
  for (int64_t t = 0; t < o.steps; ++t)
    std::printf(" %8s", ("step " + std::to_string(t)).c_str());
  std::printf("\n");
  double worst = 0;
  std::string worst_at;
  for (const auto& layer : kLayerTypes) {
    std::printf("%-10s", layer.c_str());
    for (int64_t t = 0; t < o.steps; ++t) {
      const double s = slopes[{layer, t}];
      if (std::isfinite(s))
        std::printf(" %+8.3f", s);
      else
        std::printf(" %8s", "-");  // fewer than two nonzero values (a readout started at zero)
      if (t >= 2 && std::isfinite(s) && std::abs(s) > std::abs(worst))
        worst = s, worst_at = layer + ", step " + std::to_string(t);
    }
    std::printf("\n");
  }
  if (o.steps > 2)
    std::printf("\nlargest |slope| at steps >= 2: %+.3f (%s): %s the +-%.2f bar\n", worst,
                worst_at.c_str(), std::abs(worst) <= o.max_slope ? "within" : "outside",
                o.max_slope);
  std::vector<std::string> warnings;
  std::string png;
  if (gnuplot_installed())
    png = run_gnuplot(out, "coordcheck", plot_script(o.widths, o.steps, parametrization), warnings);
  else
    warnings.push_back("gnuplot is not installed: no plot");
  for (const auto& w : warnings)
    spdlog::warn("{}", w);
  std::printf("wrote %s/coords.csv, slopes.csv%s\n", out.c_str(),
              png.empty() ? "" : (", " + png).c_str());
  return 0;
}

}  // namespace ladder
