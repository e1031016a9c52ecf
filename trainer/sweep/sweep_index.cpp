#include "trainer/sweep/sweep_index.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/hdf5.h"
#include "core/trace_schema.h"
#include "trainer/run/checkpoint.h"

namespace ladder {
namespace fs = std::filesystem;
namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A resolved recipe's "key = value" lines by "section.key", comments dropped (a derived key's
// resolved value is a comment: it depends on the machine, not on the recipe).
std::map<std::string, std::string> recipe_lines(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line.substr(1, line.find(']') - 1);
      continue;
    }
    const size_t eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    std::string value = line.substr(eq + 3);
    if (const size_t comment = value.find("  # derived"); comment != std::string::npos)
      value.resize(comment);
    out[section + "." + line.substr(0, eq)] = value;
  }
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s)
    out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string number_text(double v) {
  if (std::isnan(v)) return "";
  char buf[32];
  if (v == std::round(v) && std::abs(v) < 1e15)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// A TOML scalar's text as an index cell: strings unquoted.
std::string cell_of(const std::string& toml) {
  if (toml.size() >= 2 && toml.front() == '"' && toml.back() == '"')
    return toml.substr(1, toml.size() - 2);
  return toml;
}

bool is_number(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

void write_atomically(const fs::path& path, const std::function<void(const std::string&)>& write) {
  const std::string tmp = path.string() + ".tmp";
  write(tmp);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(path.string(), "cannot write the sweep index: " + ec.message());
}

}  // namespace

RunState read_run_state(const SweepRun& run) {
  RunState s;
  const auto steps = checkpoint_steps(run.dir);
  if (!steps.empty()) s.steps_done = steps.back();
  const fs::path trace = fs::path(run.dir) / "trace.h5";
  std::error_code ec;
  if (fs::exists(trace, ec)) {
    s.has_trace = true;
    // A trace being written by a run in another process may be unreadable for an instant: the
    // losses are then left empty rather than failing the index.
    try {
      h5::File f = h5::File::open(trace.string(), false);
      auto column = [&](const std::string& name) {
        std::vector<double> v;
        if (!h5::exists(f, name)) return v;
        const torch::Tensor t = h5::read_tensor(f, name).to(torch::kFloat64).contiguous();
        v.assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
        return v;
      };
      const auto loss = column(trace_schema::path("train", "loss")),
                 val = column(trace_schema::path("eval", "loss"));
      const auto tokens = column(trace_schema::path("train", "tokens")),
                 elapsed = column(trace_schema::path("train", "elapsed_s"));
      if (!loss.empty()) s.final_loss = loss.back();
      if (!tokens.empty()) s.tokens_seen = tokens.back();
      if (!elapsed.empty()) s.elapsed_s = elapsed.back();
      if (!val.empty()) {
        s.final_val_loss = val.back();
        s.best_val_loss = val.front();
        for (double v : val)
          if (v < s.best_val_loss) s.best_val_loss = v;
      }
    } catch (const Error&) {
    }
  }
  const fs::path error = fs::path(run.dir) / "error.txt";
  if (s.steps_done >= run.recipe.train.steps) {
    s.status = "done";
  } else if (fs::exists(error, ec)) {
    s.status = "failed";
    s.error = read_text(error);
    while (!s.error.empty() && (s.error.back() == '\n' || s.error.back() == '\r'))
      s.error.pop_back();
  } else if (s.has_trace || !steps.empty()) {
    s.status = "partial";
  }
  return s;
}

void check_run_folder(const SweepRun& run) {
  const fs::path saved = fs::path(run.dir) / "recipe.toml";
  std::error_code ec;
  if (!fs::exists(saved, ec)) return;
  const auto have = recipe_lines(read_text(saved));
  const auto want = recipe_lines(resolved_recipe_toml(run.recipe));
  // A key the folder's recipe lacks came into ladder after that run: it ran as the key's default.
  std::map<std::string, std::string> defaults;
  for (const auto& k : recipe_schema())
    defaults[k.key] = k.default_value;
  for (const auto& [key, value] : want) {
    auto it = have.find(key);
    if (it == have.end() && defaults.count(key) && defaults.at(key) == value) continue;
    if (it == have.end() || it->second != value)
      throw Error(run.dir, "holds a run of another recipe (" + key + " = " +
                               (it == have.end() ? "<missing>" : it->second) + " there, " + value +
                               " in the sweep): remove the folder, or give the sweep another "
                               "sweep.name");
  }
}

void record_run_error(const SweepRun& run, const std::string& error) {
  const fs::path path = fs::path(run.dir) / "error.txt";
  std::error_code ec;
  if (error.empty()) {
    fs::remove(path, ec);
    return;
  }
  fs::create_directories(run.dir, ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << error << "\n";
}

namespace {

// The index's columns for `runs` (each a name and its cells: text, numbers that parse back),
// declared once: the CSV, the HDF5 index and is_index_column come from here. `stable`: the table of
// a [cooldown] sweep's stable runs.
std::vector<std::pair<std::string, std::vector<std::string>>> index_table(
    const Sweep& sweep, const std::vector<const SweepRun*>& runs,
    const std::vector<RunState>& states, bool stable) {
  std::vector<std::pair<std::string, std::vector<std::string>>> columns;
  auto column = [&](const std::string& name, const std::function<std::string(size_t)>& cell) {
    std::vector<std::string> cells;
    for (size_t i = 0; i < runs.size(); ++i)
      cells.push_back(cell(i));
    columns.emplace_back(name, std::move(cells));
  };
  column("run", [&](size_t i) { return runs[i]->name; });
  column("status", [&](size_t i) { return states[i].status; });
  std::vector<std::string> keys = sweep.varied_keys;
  for (const auto& k : sweep.derived_keys)
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  for (const auto& key : keys)
    column(key, [&](size_t i) {
      auto it = runs[i]->values.find(key);
      return it == runs[i]->values.end() ? std::string() : cell_of(it->second);
    });
  column("N", [&](size_t i) {
    return number_text(static_cast<double>(runs[i]->size.non_embedding_params));
  });
  column("N_total",
         [&](size_t i) { return number_text(static_cast<double>(runs[i]->size.total_params)); });
  column("flops_per_token", [&](size_t i) { return number_text(runs[i]->size.flops_per_token); });
  column("D",
         [&](size_t i) { return number_text(static_cast<double>(runs[i]->recipe.train.tokens)); });
  column("C", [&](size_t i) { return number_text(runs[i]->flops); });
  column("flops_spent",
         [&](size_t i) { return number_text(stable ? runs[i]->flops : runs[i]->flops_spent); });
  column("branched_from", [&](size_t i) {
    const SweepRun& r = *runs[i];
    return r.stable < 0 ? std::string()
                        : sweep.stable_runs[static_cast<size_t>(r.stable)].name + "@" +
                              std::to_string(r.branch_step);
  });
  // What the fitter takes its points as (scaling/points.h).
  column("kind", [&](size_t i) {
    return std::string(stable ? "stable" : runs[i]->stable >= 0 ? "cooldown" : "run");
  });
  column("steps",
         [&](size_t i) { return number_text(static_cast<double>(runs[i]->recipe.train.steps)); });
  column("steps_done",
         [&](size_t i) { return number_text(static_cast<double>(states[i].steps_done)); });
  column("tokens_seen", [&](size_t i) { return number_text(states[i].tokens_seen); });
  column("final_loss", [&](size_t i) { return number_text(states[i].final_loss); });
  column("final_val_loss", [&](size_t i) { return number_text(states[i].final_val_loss); });
  column("best_val_loss", [&](size_t i) { return number_text(states[i].best_val_loss); });
  column("elapsed_s", [&](size_t i) { return number_text(states[i].elapsed_s); });
  column("trace", [&](size_t i) { return states[i].has_trace ? runs[i]->name + "/trace.h5" : ""; });
  column("error", [&](size_t i) { return states[i].error; });
  return columns;
}

void write_csv(const fs::path& path,
               const std::vector<std::pair<std::string, std::vector<std::string>>>& columns,
               size_t rows) {
  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    for (size_t c = 0; c < columns.size(); ++c)
      out << (c ? "," : "") << csv_field(columns[c].first);
    out << "\n";
    for (size_t i = 0; i < rows; ++i) {
      for (size_t c = 0; c < columns.size(); ++c)
        out << (c ? "," : "") << csv_field(columns[c].second[i]);
      out << "\n";
    }
    if (!out) throw Error(tmp, "cannot write the sweep index");
  });
}

}  // namespace

bool is_index_column(const std::string& name) {
  for (const auto& [column, cells] : index_table(Sweep{}, {}, {}, false))
    if (column == name) return true;
  return false;
}

void write_index(const Sweep& sweep, const std::vector<RunState>& states) {
  fs::create_directories(sweep.dir);
  std::vector<const SweepRun*> runs;
  for (const SweepRun& r : sweep.runs)
    runs.push_back(&r);
  const auto columns = index_table(sweep, runs, states, false);
  write_csv(fs::path(sweep.dir) / "index.csv", columns, runs.size());
  // [cooldown]: the stable runs, read from their folders, in a table of their own.
  if (!sweep.stable_runs.empty()) {
    std::vector<const SweepRun*> stable;
    std::vector<RunState> stable_states;
    for (const SweepRun& r : sweep.stable_runs)
      stable.push_back(&r), stable_states.push_back(read_run_state(r));
    write_csv(fs::path(sweep.dir) / "stable.csv", index_table(sweep, stable, stable_states, true),
              stable.size());
  }

  write_atomically(fs::path(sweep.dir) / "index.h5", [&](const std::string& tmp) {
    h5::File f = h5::File::create(tmp);
    h5::set_attr(f, "/", "format", std::string("ladder-sweep-index"));
    h5::set_attr(f, "/", "version", int64_t{1});
    h5::set_attr(f, "/", "sweep", sweep.text);
    h5::set_attr(f, "/", "name", sweep.name);
    h5::set_attr(f, "/", "recipe", sweep.recipe_path);
    for (const auto& [name, cells] : columns) {
      // A column is numeric when every non-empty cell is a number (empty cells become NaN).
      bool numeric =
          name != "run" && name != "status" && name != "kind" && name != "trace" && name != "error";
      std::vector<double> values;
      for (const auto& cell : cells) {
        double v = std::nan("");
        if (!cell.empty() && !is_number(cell, v)) numeric = false;
        values.push_back(v);
      }
      if (numeric)
        h5::write_tensor(
            f, "runs/" + name,
            torch::tensor(values, torch::kFloat64).view({static_cast<int64_t>(values.size())}));
      else
        h5::write_strings(f, "runs/" + name, cells);
    }
    f.close();
  });
}

}  // namespace ladder
