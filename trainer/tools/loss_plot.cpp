#include "trainer/tools/loss_plot.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/files.h"
#include "core/hdf5.h"
#include "core/plot.h"
#include "core/trace_schema.h"

namespace ladder {
namespace fs = std::filesystem;
namespace {

// A run's trace, given its folder or the file itself.
std::string trace_of(const std::string& run) {
  const fs::path p = fs::is_directory(run) ? fs::path(run) / "trace.h5" : fs::path(run);
  if (!fs::exists(p)) throw Error(run, "no trace.h5: not a run folder or trace");
  return p.string();
}

// The run's name for the legend: its folder's name.
std::string label_of(const std::string& trace) {
  std::string name = fs::path(trace).parent_path().filename().string();
  return name.empty() ? trace : name;
}

// Writes `x loss` rows of a trace group's column `loss` (divided by the column `per`, when
// given); returns how many.
int64_t write_series(const h5::File& f, const std::string& group, const std::string& x,
                     const fs::path& file, const std::string& loss_column = "loss",
                     const std::string& per = "") {
  std::ofstream out(file);
  if (!out) throw Error(file.string(), "cannot write the file");
  out << "# " << x << " loss\n";
  if (!h5::exists(f, trace_schema::path(group, loss_column))) return 0;
  const torch::Tensor xs = h5::read_tensor(f, trace_schema::path(group, x)).to(torch::kFloat64);
  torch::Tensor loss =
      h5::read_tensor(f, trace_schema::path(group, loss_column)).to(torch::kFloat64);
  int64_t n = std::min(xs.numel(), loss.numel());
  if (!per.empty()) {
    const torch::Tensor d = h5::read_tensor(f, trace_schema::path(group, per)).to(torch::kFloat64);
    n = std::min(n, d.numel());
    loss = loss.slice(0, 0, n) / d.slice(0, 0, n);
  }
  const double* a = xs.data_ptr<double>();
  const double* b = loss.contiguous().data_ptr<double>();
  out.precision(10);
  for (int64_t i = 0; i < n; ++i)
    out << a[i] << ' ' << b[i] << '\n';
  return n;
}

}  // namespace

std::string plot_losses(const LossPlotOptions& o) {
  if (o.runs.empty()) throw Error("ladder plot", "name at least one run");
  if (o.x != "tokens" && o.x != "flops" && o.x != "step")
    throw Error("--x", "'" + o.x + "' is not one of tokens, flops, step");
  if (o.log != "" && o.log != "x" && o.log != "y" && o.log != "xy")
    throw Error("--log", "'" + o.log + "' is not one of x, y, xy");
  std::vector<std::string> traces;
  for (const auto& run : o.runs)
    traces.push_back(trace_of(run));
  if (!gnuplot_installed())
    throw Error("ladder plot", "gnuplot is not installed (apt install gnuplot-nox)");
  const fs::path png = !o.out.empty()       ? fs::path(o.out)
                       : traces.size() == 1 ? fs::path(traces.front()).parent_path() / "loss.png"
                                            : fs::path("loss.png");
  if (png.extension() != ".png") throw Error("--out", "'" + png.string() + "' is not a .png");
  const fs::path dir = png.parent_path().empty() ? fs::path(".") : png.parent_path();
  create_output_folder(dir.string());
  const std::string name = png.stem().string();

  // One colour per run: its training loss as a thin line, its validation loss as points joined.
  // The validation curve: the split's loss, or an eval set's; per token, or per byte.
  const std::string suffix = o.eval_set.empty() ? "" : "_" + o.eval_set;
  const std::string loss_column = "loss" + suffix;
  const std::string per = o.per_byte ? "bytes_per_token" + suffix : "";
  const std::string val_label = o.eval_set.empty() ? "val" : o.eval_set;
  std::string plots;
  int64_t rows = 0;
  for (size_t i = 0; i < traces.size(); ++i) {
    h5::File f = h5::File::open(traces[i], false);
    const std::string stem = name + "." + std::to_string(i);
    for (const std::string& column : {loss_column, per})
      if (!column.empty() && !h5::exists(f, trace_schema::path("eval", column)))
        throw Error(traces[i],
                    "has no eval/" + column +
                        (o.eval_set.empty()
                             ? " (a trace from before bytes per token was recorded)"
                             : " (eval set " + o.eval_set + " is not among the run's eval.sets)"));
    const int64_t train_rows =
        o.per_byte ? 0 : write_series(f, "train", o.x, dir / (stem + ".train.dat"));
    const int64_t evals =
        write_series(f, "eval", o.x, dir / (stem + ".eval.dat"), loss_column, per);
    rows += o.per_byte ? evals : train_rows;
    const std::string colour = "lc " + std::to_string(i + 1);
    std::string label = label_of(traces[i]);
    for (char& c : label)
      if (c == '\'') c = '"';
    if (train_rows > 0)
      plots += std::string(plots.empty() ? "plot " : ", \\\n     ") + "'" + stem +
               ".train.dat' using 1:2 with lines lw 1 " + colour + " title '" + label + " train'";
    if (evals > 0)
      plots += std::string(plots.empty() ? "plot " : ", \\\n     ") + "'" + stem +
               ".eval.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 " + colour + " title '" +
               label + " " + val_label + "'";
  }
  if (rows == 0)
    throw Error(o.runs.front(), o.per_byte ? "the trace holds no evaluation rows yet"
                                           : "the trace holds no training rows yet");
  const std::string xlabel = o.x == "flops" ? "training FLOPs" : o.x == "step" ? "step" : "tokens";
  std::string script = "set grid\nset key top right\nset xlabel '" + xlabel +
                       "'\nset ylabel 'loss (" + (o.per_byte ? "nats/byte" : "nats/token") +
                       ")'\nset title 'loss against " + xlabel + "'\n";
  if (!o.log.empty()) script += "set logscale " + o.log + "\n";
  if (o.x != "step") script += "set format x '%.1e'\n";
  std::vector<std::string> warnings;
  if (run_gnuplot(dir.string(), name, script + plots + "\n", warnings).empty())
    throw Error(png.string(), warnings.empty() ? "gnuplot failed" : warnings.front());
  return png.string();
}

}  // namespace ladder
