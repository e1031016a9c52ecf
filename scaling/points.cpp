#include "scaling/points.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/hdf5.h"
#include "core/trace_schema.h"

namespace ladder::scaling {
namespace fs = std::filesystem;
namespace {

bool parse_number(const std::string& text, double& out) {
  if (text.empty()) return false;
  char* end = nullptr;
  out = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size();
}

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  bool quoted = false;
  for (char c : line) {
    if (c == '"') {
      quoted = !quoted;
    } else if (c == ',' && !quoted) {
      cells.push_back(trim(cell));
      cell.clear();
    } else {
      cell += c;
    }
  }
  cells.push_back(trim(cell));
  return cells;
}

double* numeric_slot(Point& p, const std::string& column) {
  if (column == "N") return &p.N;
  if (column == "D") return &p.D;
  if (column == "C") return &p.C;
  if (column == "P") return &p.P;
  if (column == "E") return &p.E;
  if (column == "N_active") return &p.N_active;
  if (column == "G") return &p.G;
  if (column == "loss") return &p.loss;
  if (column == "lr") return &p.lr;
  if (column == "width") return &p.width;
  return nullptr;
}

// An attribute filter "key=value": numbers compare as numbers, anything else as text.
bool matches(const Point& p, const std::string& filter) {
  const auto eq = filter.find('=');
  const std::string key = filter.substr(0, eq), want = filter.substr(eq + 1);
  std::string have;
  if (const auto it = p.attributes.find(key); it != p.attributes.end()) {
    have = it->second;
  } else if (const double v = field(p, key); !std::isnan(v)) {
    have = std::to_string(v);
  } else {
    return false;
  }
  double a = 0, b = 0;
  if (parse_number(have, a) && parse_number(want, b))
    return std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b));
  return have == want;
}

}  // namespace

double attribute_number(const Point& p, const std::string& name) {
  const auto it = p.attributes.find(name);
  double value = kMissing;
  return it != p.attributes.end() && parse_number(it->second, value) ? value : kMissing;
}

double field(const Point& p, const std::string& name) {
  Point copy = p;
  const double* slot = numeric_slot(copy, name);
  return slot ? *slot : kMissing;
}

std::vector<Point> read_trace(const std::string& path, std::vector<std::string>& warnings,
                              const std::string& eval_set) {
  h5::File f = h5::File::open(path, /*writable=*/false);
  if (!h5::has_attr(f, "/", "format") || h5::get_string_attr(f, "/", "format") != "ladder-trace")
    throw Error(path, "not a ladder trace (no format = \"ladder-trace\" attribute)");
  const std::string run = fs::path(path).parent_path().string();
  Point base;
  base.run = run;
  for (const std::string& name : h5::list_attrs(f, "/"))
    if (name != "recipe") base.attributes[name] = h5::attr_text(f, "/", name);
  auto number = [&](const char* name, double fallback) {
    if (!h5::has_attr(f, "/", name)) return fallback;
    double v = 0;
    return parse_number(base.attributes[name], v) ? v : fallback;
  };
  base.N = number("N", kMissing);
  base.P = number("P", number("streams", 1));
  base.E = std::max(1.0, number("experts", 1));  // the trainer writes 0 for a dense model
  base.N_active = number("active_N", kMissing);  // traces before the MoE model: dense, = N
  const double granularity = number("granularity", 0);
  if (granularity > 0) base.G = granularity;
  base.lr = number("lr", kMissing);
  base.width = number("width", kMissing);
  // Its kind: a branch's points are a cooldown's; a constant learning rate after the warm-up is a
  // stable run; anything else (and a trace from before the attributes) a run.
  base.attributes["kind"] =
      number("branch_step", 0) > 0 ? "cooldown"
      : h5::has_attr(f, "/", "lr_schedule") && base.attributes["lr_schedule"] == "constant"
          ? "stable"
          : "run";

  std::string group = "eval", loss_column = "loss";
  if (!eval_set.empty()) {
    // An eval set's losses (eval.sets); no fallback: a run without the set is not a point of it.
    loss_column = "loss_" + eval_set;
    if (!h5::exists(f, trace_schema::path("eval", loss_column))) {
      const std::string sets =
          h5::has_attr(f, "/", "eval_sets") ? base.attributes["eval_sets"] : "";
      throw Error(path, "has no eval set \"" + eval_set + "\" (" +
                            (sets.empty() ? std::string("it evaluated none: eval.sets")
                                          : "its eval sets: " + sets) +
                            ")");
    }
  } else if (!h5::exists(f, trace_schema::path("eval", "loss")) ||
             h5::series_length(f, trace_schema::path("eval", "loss")) == 0) {
    group = "train";
    if (!h5::exists(f, trace_schema::path("train", "loss")) ||
        h5::series_length(f, trace_schema::path("train", "loss")) == 0) {
      warnings.push_back(path + ": no evaluation or training rows; skipped");
      return {};
    }
    warnings.push_back(path + ": no evaluation rows; using training losses");
  }
  auto column = [&](const std::string& name) {
    const auto t =
        h5::read_tensor(f, trace_schema::path(group, name)).to(torch::kFloat64).contiguous();
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  };
  const auto tokens = column("tokens"), flops = column("flops"), loss = column(loss_column);
  std::vector<Point> points;
  int64_t bad = 0;
  for (size_t i = 0; i < loss.size(); ++i) {
    if (!std::isfinite(loss[i])) {
      ++bad;
      continue;
    }
    Point p = base;
    p.D = tokens[i], p.C = flops[i], p.loss = loss[i];
    points.push_back(std::move(p));
  }
  // The averaged weights' losses (eval.average), where the run evaluated them.
  if (group == "eval" && eval_set.empty() &&
      h5::exists(f, trace_schema::path("eval", "average_loss"))) {
    const auto average = column("average_loss");
    for (size_t i = 0; i < average.size(); ++i) {
      if (!std::isfinite(average[i])) continue;
      Point p = base;
      p.attributes["kind"] = "average";
      p.D = tokens[i], p.C = flops[i], p.loss = average[i];
      points.push_back(std::move(p));
    }
  }
  if (bad > 0)
    warnings.push_back(path + ": " + std::to_string(bad) + " non-finite loss" +
                       (bad > 1 ? "es" : "") + " skipped");
  return points;
}

std::vector<Point> read_csv(const std::string& path, std::vector<std::string>& warnings) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot read the file");
  std::string line;
  std::vector<std::string> header;
  std::vector<Point> points;
  int64_t line_no = 0, bad = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    const auto cells = split_csv_line(t);
    if (header.empty()) {
      header = cells;
      if (std::find(header.begin(), header.end(), "loss") == header.end())
        throw Error(path + ":" + std::to_string(line_no),
                    "the header has no loss column (columns: N, N_active, D, C, P, E, G, loss, lr, "
                    "width, run, "
                    "and any attribute)");
      continue;
    }
    if (cells.size() != header.size())
      throw Error(path + ":" + std::to_string(line_no), "has " + std::to_string(cells.size()) +
                                                            " cells but the header has " +
                                                            std::to_string(header.size()));
    Point p;
    p.run = path + ":" + std::to_string(line_no);  // without a run column each row is its own run
    for (size_t c = 0; c < header.size(); ++c) {
      if (header[c] == "run") {
        p.run = cells[c];
        continue;
      }
      p.attributes[header[c]] = cells[c];
      if (double* slot = numeric_slot(p, header[c])) {
        const std::string& text = cells[c];
        const bool blank = text.empty() || text == "nan" || text == "NaN";
        if (!blank && !parse_number(text, *slot))
          throw Error(path + ":" + std::to_string(line_no),
                      "column " + header[c] + ": '" + text + "' is not a number");
        if (blank) *slot = header[c] == "P" || header[c] == "E" ? 1.0 : kMissing;
      }
    }
    if (!std::isfinite(p.loss)) {
      ++bad;
      continue;
    }
    points.push_back(std::move(p));
  }
  if (header.empty()) throw Error(path, "is empty (expected a header row and points)");
  if (bad > 0)
    warnings.push_back(path + ": " + std::to_string(bad) + " row" + (bad > 1 ? "s" : "") +
                       " with a missing or non-finite loss skipped");
  return points;
}

namespace {

// The runs a sweep's CSV (index.csv, stable.csv) lists: the finished ones are read, and the CSV's
// columns (the varied keys, N, D, ...) join each point's attributes for --filter.
void read_sweep_runs(const std::string& dir, const std::string& csv, std::vector<Point>& points,
                     std::vector<std::string>& warnings, const std::string& eval_set) {
  const std::string index = (fs::path(dir) / csv).string();
  std::ifstream in(index);
  std::string line;
  std::vector<std::string> header;
  std::map<std::string, int> skipped;  // status -> runs
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const auto cells = split_csv_line(line);
    if (header.empty()) {
      header = cells;
      continue;
    }
    if (trim(line).empty()) continue;
    if (cells.size() != header.size())
      throw Error(index + ":" + std::to_string(line_no), "has " + std::to_string(cells.size()) +
                                                             " cells but the header has " +
                                                             std::to_string(header.size()));
    std::map<std::string, std::string> row;
    for (size_t c = 0; c < header.size(); ++c)
      row[header[c]] = cells[c];
    if (row["status"] != "done") {
      ++skipped[row["status"]];
      continue;
    }
    const std::string trace = (fs::path(dir) / row["trace"]).string();
    std::error_code ec;
    if (row["trace"].empty() || !fs::is_regular_file(trace, ec))
      throw Error(index + ":" + std::to_string(line_no),
                  "run " + row["run"] + " is done but its trace " + trace + " is missing");
    for (Point p : read_trace(trace, warnings, eval_set)) {
      for (const auto& [key, value] : row)
        if (key != "trace" && key != "error" && key != "status" && key != "run" && key != "kind" &&
            !p.attributes.count(key))
          p.attributes[key] = value;
      points.push_back(std::move(p));
    }
  }
  if (header.size() < 2 || header[0] != "run" || header[1] != "status")
    throw Error(index, "not a ladder sweep index (its header starts with run,status)");
  for (const auto& [status, n] : skipped)
    warnings.push_back(index + ": " + std::to_string(n) + " run" + (n > 1 ? "s" : "") + " " +
                       status + ", not used (only finished runs are fitted)");
}

}  // namespace

// A sweep folder (`ladder sweep`): index.csv lists its runs, stable.csv (with [cooldown]) its
// stable runs.
std::vector<Point> read_sweep(const std::string& dir, std::vector<std::string>& warnings,
                              const std::string& eval_set) {
  std::vector<Point> points;
  read_sweep_runs(dir, "index.csv", points, warnings, eval_set);
  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / "stable.csv", ec))
    read_sweep_runs(dir, "stable.csv", points, warnings, eval_set);
  return points;
}

const std::vector<std::string>& point_kinds() {
  static const std::vector<std::string> kinds = {"run", "cooldown", "stable", "average"};
  return kinds;
}

std::vector<Point> load_points(const std::vector<std::string>& inputs, const PointOptions& options,
                               std::vector<std::string>& warnings) {
  for (const auto& f : options.filters)
    if (f.find('=') == std::string::npos || f.front() == '=')
      throw Error("--filter " + f, "expected key=value, e.g. --filter arch=dense");
  if (!(options.drop_first >= 0 && options.drop_first < 1))
    throw Error("--drop-first", "must be in [0, 1); got " + std::to_string(options.drop_first));
  for (const auto& k : options.kinds)
    if (std::find(point_kinds().begin(), point_kinds().end(), k) == point_kinds().end())
      throw Error("--kind " + k, "not a kind of point: run, cooldown, stable or average");
  std::vector<Point> all;
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (fs::is_directory(input, ec) && fs::is_regular_file(fs::path(input) / "index.csv", ec)) {
      auto points = read_sweep(input, warnings, options.eval_set);
      all.insert(all.end(), points.begin(), points.end());
    } else if (fs::is_directory(input, ec)) {
      std::vector<std::string> traces;
      for (auto it = fs::recursive_directory_iterator(input, ec);
           it != fs::recursive_directory_iterator(); it.increment(ec))
        if (it->path().filename() == "trace.h5") traces.push_back(it->path().string());
      std::sort(traces.begin(), traces.end());  // the same order on every file system
      if (traces.empty()) throw Error(input, "holds no trace.h5 (searched recursively)");
      for (const auto& t : traces) {
        auto points = read_trace(t, warnings, options.eval_set);
        all.insert(all.end(), points.begin(), points.end());
      }
    } else if (fs::is_regular_file(input, ec)) {
      const std::string ext = fs::path(input).extension().string();
      if (ext == ".csv" && !options.eval_set.empty())
        throw Error(input, "--eval " + options.eval_set +
                               ": a CSV of points holds one loss per row; --eval chooses among a "
                               "trace's eval sets");
      auto points =
          ext == ".csv" ? read_csv(input, warnings) : read_trace(input, warnings, options.eval_set);
      all.insert(all.end(), points.begin(), points.end());
    } else {
      throw Error(input, "no such file or folder");
    }
  }

  // The kinds asked for (a CSV row without a kind, or with an empty one, is a run's point).
  const auto kind_of = [](const Point& p) {
    const auto it = p.attributes.find("kind");
    return it == p.attributes.end() || it->second.empty() ? std::string("run") : it->second;
  };
  std::erase_if(all, [&](const Point& p) {
    return std::find(options.kinds.begin(), options.kinds.end(), kind_of(p)) == options.kinds.end();
  });
  // Per run and kind: drop the start of training, or keep the last point only.
  const auto series_of = [&](const Point& p) { return p.run + "\n" + kind_of(p); };
  std::map<std::string, double> last_tokens;
  for (const auto& p : all)
    if (!std::isnan(p.D)) last_tokens[series_of(p)] = std::max(last_tokens[series_of(p)], p.D);
  std::vector<Point> kept;
  for (const auto& p : all) {
    if (!std::all_of(options.filters.begin(), options.filters.end(),
                     [&](const std::string& f) { return matches(p, f); }))
      continue;
    const auto last = last_tokens.find(series_of(p));
    if (last != last_tokens.end() && !std::isnan(p.D)) {
      if (options.final_only && p.D != last->second) continue;
      if (!options.final_only && p.D <= options.drop_first * last->second) continue;
    }
    kept.push_back(p);
  }
  return kept;
}

}  // namespace ladder::scaling
