// The fitter's input: points (N, D, C, P, E, loss, ...) from run traces (DESIGN.md contract 6) or
// from CSV files of published data.
//
// From a trace, every evaluation row is a point: N = the run's non-embedding parameters, D = tokens
// seen, C = FLOPs so far, loss = validation loss, with the run's attributes (streams P, experts E,
// active parameters N_active, granularity G, learning rate, width, ...). Each point has a kind (its
// attribute `kind`), and the fitter takes the kinds PointOptions::kinds names:
//   run       a run's evaluations (the default, with cooldown)
//   cooldown  a branch's (ladder train --branch-from, trainer/run/branch.h): the run of its length
//   stable    a run at a constant learning rate after its warm-up (a [cooldown] sweep's stable run)
//   average   the loss of the averaged weights at an evaluation (eval.average) A trace without
//   evaluation
// rows falls back to its training losses, with a warning. From a CSV (header row, '#' comments),
// the columns N, N_active, D, C, P, E, G, loss, lr, width and run are recognised; any other column
// is an attribute usable by --filter.
//
// Bad input never crashes: an unreadable or foreign HDF5 file, a CSV with a missing column or a
// malformed number is a ladder::Error naming the file (and line); non-finite losses and empty runs
// are skipped with a warning.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace ladder::scaling {

constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();

struct Point {
  std::string run;  // the run folder; for CSV rows without a run column, "file.csv:line"
  double N = kMissing, D = kMissing, C = kMissing;
  double P = 1;  // parallel streams (ParScale)
  double E = 1;  // experts (1: dense)
  // Active non-embedding parameters (a mixture of experts uses top_k of its experts per token;
  // missing: N, a dense model) and the experts' granularity G (Krajewski et al. 2024).
  double N_active = kMissing, G = kMissing;
  double loss = kMissing, lr = kMissing, width = kMissing;
  std::map<std::string, std::string> attributes;  // every run attribute / extra column, as text
};

// The kinds of points (above).
const std::vector<std::string>& point_kinds();

struct PointOptions {
  double drop_first = 0.1;  // per run, drop points with D <= drop_first x the run's last D
  bool final_only = false;  // per run, keep only the point with the most tokens
  // The kinds of points kept; drop_first and final_only apply per run and kind.
  std::vector<std::string> kinds = {"run", "cooldown"};
  std::vector<std::string> filters;  // "key=value": keep points whose attribute matches
  // The loss a point holds: "" the validation split's (eval/loss), or eval set S's (eval/loss_S,
  // recipe key eval.sets).
  std::string eval_set;
};

// Reads every input (a sweep folder of `ladder sweep`, whose index.csv lists its runs and
// stable.csv its stable runs: the finished ones are read; any other directory, searched recursively
// for trace.h5; a trace.h5; a .csv file), then applies the options. Warnings go to `warnings`.
std::vector<Point> load_points(const std::vector<std::string>& inputs, const PointOptions& options,
                               std::vector<std::string>& warnings);

std::vector<Point> read_trace(const std::string& path, std::vector<std::string>& warnings,
                              const std::string& eval_set = "");
std::vector<Point> read_csv(const std::string& path, std::vector<std::string>& warnings);
std::vector<Point> read_sweep(const std::string& dir, std::vector<std::string>& warnings,
                              const std::string& eval_set = "");

// The value of a named quantity of a point: N, N_active, D, C, P, E, G, loss, lr, width.
double field(const Point& p, const std::string& name);

// A run attribute (or extra CSV column) as a number: "depth", "weight_decay", ...; NaN when the
// point has none or it is not a number.
double attribute_number(const Point& p, const std::string& name);

}  // namespace ladder::scaling
