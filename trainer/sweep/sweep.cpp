#include "trainer/sweep/sweep.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/format.h"
#include "data/dataset.h"
#include "optim/schedule.h"
#include "trainer/recipe/expression.h"
#include "trainer/run/branch.h"
#include "trainer/run/checkpoint.h"
#include "trainer/sweep/sweep_index.h"

namespace ladder {
namespace fs = std::filesystem;
namespace {

// A value of the sweep file with the line it is on.
struct Entry {
  std::string key;  // "model.d_model"
  const toml::node* node = nullptr;
  std::string where;  // sweep.toml:12
  int64_t line = 0, column = 0;
};

// One axis of the product: a [grid] key, or a [[zip]] table of equally long lists.
struct Axis {
  std::vector<std::string> keys, wheres;
  std::vector<std::vector<std::string>> values;  // [key][position] -> TOML text
  size_t length() const { return values.empty() ? 0 : values[0].size(); }
};

std::string where_of(const std::string& file, const toml::node& node) {
  return file + ":" + std::to_string(node.source().begin.line);
}

// A TOML value as the text an override takes; tables and dates are refused.
std::string toml_text(const toml::node& node, const std::string& where, const std::string& key) {
  if (auto v = node.value<int64_t>(); node.is_integer()) return std::to_string(*v);
  if (node.is_floating_point()) return shortest_float(*node.value<double>());
  if (node.is_boolean()) return *node.value<bool>() ? "true" : "false";
  if (node.is_string()) return toml_string(*node.value<std::string>());
  if (const toml::array* a = node.as_array()) {
    std::string out = "[";
    for (size_t i = 0; i < a->size(); ++i)
      out += (i ? ", " : "") + toml_text(*a->get(i), where, key);
    return out + "]";
  }
  throw Error(where, key + ": expected a number, a boolean, a string or a list");
}

// Flattens a table of the sweep file into "section.key" entries, in file order. Dotted keys
// (model.d_model = ...), quoted keys ("model.d_model" = ...) and sub-tables ([grid.model]) all
// name the same recipe key.
void flatten(const toml::table& table, const std::string& prefix, const std::string& file,
             std::vector<Entry>& out) {
  for (const auto& [k, node] : table) {
    const std::string key =
        prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const toml::table* sub = node.as_table()) {
      flatten(*sub, key, file, out);
      continue;
    }
    out.push_back(Entry{key, &node, where_of(file, node), node.source().begin.line,
                        node.source().begin.column});
  }
}

const std::set<std::string>& size_names() {
  static const std::set<std::string> names = {"N", "N_total", "N_active", "flops_per_token",
                                              "vocab"};
  return names;
}

std::string short_name(const std::string& key) {
  return key.substr(key.find('.') + 1);
}

// A key without a section is a sweep variable: a number that expressions and names read (a compute
// budget, a tokens-per-parameter ratio) but no recipe key.
bool is_variable(const std::string& key) {
  return key.find('.') == std::string::npos;
}

void check_variable_name(const Entry& e) {
  const bool identifier = !e.key.empty() && !std::isdigit(static_cast<unsigned char>(e.key[0])) &&
                          std::all_of(e.key.begin(), e.key.end(),
                                      [](unsigned char c) { return std::isalnum(c) || c == '_'; });
  if (!identifier)
    throw Error(e.where, e.key +
                             ": a sweep variable's name is letters, digits and '_'; recipe "
                             "keys are written section.key (model.d_model)");
  if (size_names().count(e.key))
    throw Error(e.where, e.key + ": names the model's size in expressions; choose another name");
  if (is_index_column(e.key))
    throw Error(e.where, e.key + ": names a column of the sweep index (" +
                             std::string(e.key == "C" ? "the run's FLOPs; " : "") +
                             "trainer/sweep/sweep_index.h); choose another name");
  for (const auto& doc : recipe_schema())
    if (short_name(doc.key) == e.key)
      throw Error(e.where, e.key + ": a sweep variable cannot share its name with the recipe key " +
                               doc.key + " (write " + doc.key + " to set that key)");
}

std::vector<Entry> entries_of(const toml::table& table, const std::string& file) {
  std::vector<Entry> out;
  flatten(table, "", file, out);
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.line, a.column) < std::tie(b.line, b.column);
  });
  for (const Entry& e : out) {
    if (is_variable(e.key)) {
      check_variable_name(e);
      continue;
    }
    if (e.key.find('.') != e.key.rfind('.'))
      throw Error(e.where, e.key + ": expected a recipe key written section.key (model.d_model)");
    if (e.key == "run.name" || e.key == "run.out_dir")
      throw Error(e.where,
                  e.key + ": set by the sweep (sweep.name, sweep.out_dir, sweep.run_name)");
    if (recipe_key_type(e.key).empty())
      throw Error(e.where, e.key + ": not a recipe key (recipes/README.md lists every key)");
  }
  return out;
}

Axis axis_from(const Entry& e, const std::string& section) {
  const toml::array* a = e.node->as_array();
  if (!a || a->empty())
    throw Error(e.where, e.key + ": a " + section + " axis is a non-empty list of values");
  Axis axis;
  axis.keys = {e.key}, axis.wheres = {e.where};
  axis.values.emplace_back();
  for (const auto& v : *a)
    axis.values[0].push_back(toml_text(v, e.where, e.key));
  return axis;
}

// The part of a run name that shows a value: quotes and brackets dropped, anything else that does
// not belong in a folder name replaced by '-'.
std::string name_text(const std::string& toml) {
  std::string out;
  for (char c : toml) {
    if (c == '"' || c == '[' || c == ']' || c == ' ' || c == '+') continue;
    out +=
        (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-') ? c : '-';
  }
  return out;
}

// Values an expression may read, for one run as its overrides accumulate.
class RunValues {
 public:
  RunValues(const Sweep& sweep, const std::map<std::string, std::string>& short_names,
            std::map<std::string, int64_t>& vocab_cache)
      : sweep_(sweep), short_names_(short_names), vocab_cache_(vocab_cache) {}

  std::map<std::string, double> variables;  // the sweep variables given so far

  // Adds the run's next override; what was read of the recipe so far no longer holds.
  void add_override(const std::string& text, const std::string& origin) {
    overrides_.push_back(text), origins_.push_back(origin);
    given_.reset(), size_.reset();
  }

  double lookup(const std::string& name, const std::string& where, const std::string& expr) {
    if (auto it = variables.find(name); it != variables.end()) return it->second;
    if (size_names().count(name)) {
      const auto [size, vocab] = accounting(where, expr);
      if (name == "N") return static_cast<double>(size.non_embedding_params);
      if (name == "N_total") return static_cast<double>(size.total_params);
      if (name == "N_active") return static_cast<double>(size.active_params);
      if (name == "flops_per_token") return size.flops_per_token;
      return static_cast<double>(vocab);
    }
    std::string key = name;
    if (name.find('.') == std::string::npos) {
      auto it = short_names_.find(name);
      if (it == short_names_.end())
        throw Error(where, "\"" + expr + "\": unknown name " + name +
                               " (recipe keys as section.key or by a unique short name, sweep "
                               "variables given before, or N, N_total, N_active, "
                               "flops_per_token, vocab)");
      if (it->second.empty())
        throw Error(where, "\"" + expr + "\": " + name +
                               " names keys of several sections; write section." + name);
      key = it->second;
    }
    // Read once per state of the overrides, however many names the expressions look up.
    if (!given_) given_ = given_recipe_values(sweep_.recipe_path, {overrides_, 1, origins_});
    const auto& values = *given_;
    auto it = values.find(key);
    if (it == values.end()) throw Error(where, "\"" + expr + "\": " + key + " is not a recipe key");
    if (!it->second.numeric)
      throw Error(where, "\"" + expr + "\": " + key + " is " + it->second.toml + ", not a number");
    return it->second.number;
  }

  // The vocabulary comes from the dataset the recipe names (its dataset.toml).
  int64_t vocab_of(const Recipe& r, const std::string& where) {
    auto it = vocab_cache_.find(r.data.path);
    if (it != vocab_cache_.end()) return it->second;
    int64_t vocab = 0;
    try {
      vocab = data::DatasetMeta::read(r.data.path).vocab_size;
    } catch (const Error& e) {
      throw Error(where, "data.path: " + format_error(e) +
                             " (prepare it with `ladder prep` before planning the sweep)");
    }
    return vocab_cache_[r.data.path] = vocab;
  }

 private:
  std::pair<models::SizeAccounting, int64_t> accounting(const std::string& where,
                                                        const std::string& expr) {
    if (size_) return *size_;
    Recipe r;
    try {
      r = load_recipe(sweep_.recipe_path, {overrides_, static_cast<int>(sweep_.ranks), origins_});
    } catch (const Error& e) {
      throw Error(where, "\"" + expr +
                             "\" needs the model's size, but the recipe so far is not "
                             "valid: " +
                             format_error(e));
    }
    const int64_t vocab = vocab_of(r, where);
    size_.emplace(models::size_accounting(r.model, vocab, r.data.seq_len), vocab);
    return *size_;
  }

  const Sweep& sweep_;
  std::vector<std::string> overrides_, origins_;
  std::optional<std::map<std::string, GivenValue>> given_;
  std::optional<std::pair<models::SizeAccounting, int64_t>> size_;
  const std::map<std::string, std::string>& short_names_;
  std::map<std::string, int64_t>& vocab_cache_;
};

// The TOML text of an expression's value for `key`: integers must come out whole.
std::string derived_text(const std::string& key, double v, const std::string& where,
                         const std::string& expr) {
  if (is_variable(key))
    return v == std::round(v) && std::abs(v) < 1e15 ? std::to_string(static_cast<int64_t>(v))
                                                    : shortest_float(v);
  const std::string type = recipe_key_type(key);
  if (type == "integer") {
    const double r = std::round(v);
    if (std::abs(v - r) > 1e-9 * std::max(1.0, std::abs(v)))
      throw Error(where, key + " = \"" + expr + "\" gives " + shortest_float(v) + ", but " + key +
                             " is an integer (wrap the expression in round(), floor() or ceil())");
    return std::to_string(static_cast<int64_t>(r));
  }
  if (type == "float") return shortest_float(v);
  throw Error(where, key + ": is a " + type + "; derived values are numbers");
}

// ----- [cooldown] ---------------------------------------------------------------------------

// The schedule keys [cooldown] sets for every run.
const std::vector<std::string> kCooldownKeys = {"schedule.kind", "schedule.decay_fraction",
                                                "schedule.decay_shape"};

SweepCooldown cooldown_of(const toml::table& t, const std::string& file) {
  SweepCooldown c;
  c.where = file + ":" + std::to_string(t.source().begin.line) + " [cooldown]";
  for (const auto& [k, node] : t) {
    const std::string key(k.str()), where = where_of(file, node);
    if (key == "fraction") {
      const std::optional<double> f = node.value<double>();
      if (!f || !(*f > 0 && *f < 1))
        throw Error(where,
                    "cooldown.fraction: a number in (0, 1), the share of each run's "
                    "steps that its cooldown takes (Haegele et al. 2024: 0.2)");
      c.fraction = *f;
    } else if (key == "shape") {
      const std::optional<std::string> shape = node.value<std::string>();
      std::string names;
      for (const auto& n : optim::kDecayShapeNames)
        names += (names.empty() ? "" : ", ") + std::string(n.name);
      try {
        if (!shape) throw std::invalid_argument("not a string");
        c.shape = choice_value(optim::kDecayShapeNames, *shape);
      } catch (const std::invalid_argument&) {
        throw Error(where, "cooldown.shape: must be one of " + names);
      }
    } else {
      throw Error(where, "cooldown." + key + ": unknown key; [cooldown] has fraction and shape");
    }
  }
  return c;
}

std::vector<std::pair<std::string, std::string>> cooldown_overrides(const SweepCooldown& c) {
  return {{"schedule.kind", "\"wsd\""},
          {"schedule.decay_fraction", shortest_float(c.fraction)},
          {"schedule.decay_shape", toml_string(choice_name(optim::kDecayShapeNames, c.shape))}};
}

// The step a run branches at: where its cooldown (wsd's decay, set by [cooldown]) begins.
int64_t branch_step_of(const SweepRun& run) {
  return optim::wsd_decay_start(run.recipe.train.steps, run.recipe.schedule);
}

// Groups the runs that differ only in their length and gives each group of two or more runs that
// can branch a stable run (sweep.h). `name_part(a, run)`: how axis a's value of `run` shows in a
// name ("" when it does not).
void plan_stable_runs(Sweep& sweep, const std::vector<Axis>& axes,
                      const std::function<std::string(size_t, const SweepRun&)>& name_part) {
  const SweepCooldown& c = *sweep.cooldown;
  // The model a run trains: its [model], architecture and [data] keys.
  std::vector<std::string> model_of;
  for (const SweepRun& run : sweep.runs) {
    std::string m;
    for (const RecipeKeyDoc& key : recipe_schema()) {
      const std::string section = key.key.substr(0, key.key.find('.'));
      if (section == "model" || section == "moe" || section == "hybrid" || section == "parscale" ||
          section == "data")
        m += recipe_value_toml(run.recipe, key.key) + "\n";
    }
    model_of.push_back(m);
  }
  // A length axis: along it (the other axes held) the same model trains for different numbers of
  // steps. Along an axis of model sizes the steps may vary too (an isoFLOP budget), but not the
  // model alone.
  std::vector<bool> length_axis(axes.size(), false);
  for (size_t a = 0; a < axes.size(); ++a) {
    std::map<std::vector<size_t>, std::pair<std::set<int64_t>, std::set<std::string>>> along;
    for (size_t i = 0; i < sweep.runs.size(); ++i) {
      std::vector<size_t> others = sweep.runs[i].position;
      others[a] = 0;
      along[others].first.insert(sweep.runs[i].recipe.train.steps);
      along[others].second.insert(model_of[i]);
    }
    bool steps_vary = false, model_varies = false;
    for (const auto& [others, seen] : along)
      steps_vary = steps_vary || seen.first.size() > 1,
      model_varies = model_varies || seen.second.size() > 1;
    length_axis[a] = steps_vary && !model_varies;
  }
  std::map<std::vector<size_t>, std::vector<size_t>> groups;  // non-length positions -> runs
  for (size_t i = 0; i < sweep.runs.size(); ++i) {
    std::vector<size_t> key;
    for (size_t a = 0; a < axes.size(); ++a)
      if (!length_axis[a]) key.push_back(sweep.runs[i].position[a]);
    groups[key].push_back(i);
  }
  const std::vector<std::string>& free = branch_free_keys();
  std::vector<std::vector<size_t>> ordered;  // groups in the order of their first run
  for (const auto& [key, members] : groups)
    ordered.push_back(members);
  std::sort(ordered.begin(), ordered.end());
  for (const std::vector<size_t>& members : ordered) {
    const SweepRun& first = sweep.runs[members.front()];
    for (const size_t m : members) {
      const SweepRun& run = sweep.runs[m];
      for (const RecipeKeyDoc& key : recipe_schema()) {
        if (std::find(free.begin(), free.end(), key.key) != free.end()) continue;
        const std::string a = recipe_value_toml(first.recipe, key.key),
                          b = recipe_value_toml(run.recipe, key.key);
        if (a != b)
          throw Error(c.where, "runs " + first.name + " and " + run.name +
                                   " differ only in their length, so they share a stable run, "
                                   "but " +
                                   key.key + " differs: " + a + " and " + b +
                                   " (a shared stable phase needs it equal: set it in [set], or "
                                   "derive it from what is not the length)");
      }
    }
    std::vector<size_t> branching;
    std::set<int64_t> points;
    for (const size_t m : members)
      if (const int64_t b = branch_step_of(sweep.runs[m]); b > 0)
        branching.push_back(m), points.insert(b);
    if (branching.size() < 2) continue;  // nothing to share: the run trains from scratch

    SweepRun stable;
    stable.index = static_cast<int64_t>(sweep.stable_runs.size());
    stable.position = first.position;
    stable.name = "stable";
    for (size_t a = 0; a < axes.size(); ++a)
      if (!length_axis[a])
        if (const std::string part = name_part(a, first); !part.empty()) stable.name += "_" + part;
    for (const SweepRun& run : sweep.runs)
      if (run.name == stable.name)
        throw Error(c.where, "the stable run of " + first.name + " would be named \"" +
                                 stable.name + "\" like a run of the sweep: rename that run");
    stable.dir = (fs::path(sweep.dir) / stable.name).string();
    std::vector<std::string> replaced = {
        "train.steps", "train.tokens", "checkpoint.intermediate", "checkpoint.intermediate_unit",
        "run.name",    "run.out_dir"};
    replaced.insert(replaced.end(), kCooldownKeys.begin(), kCooldownKeys.end());
    for (const SweepOverride& o : first.overrides)
      if (std::find(replaced.begin(), replaced.end(), o.key) == replaced.end())
        stable.overrides.push_back(o);
    std::string list;
    for (const int64_t b : points)
      list += (list.empty() ? "" : ", ") + std::to_string(b);
    // The peak learning rate after the warm-up, to the last branch point: the steps every run of
    // the group shares (the constant schedule is wsd before its decay).
    for (const auto& [key, toml] : std::vector<std::pair<std::string, std::string>>{
             {"schedule.kind", "\"constant\""},
             {"train.steps", std::to_string(*points.rbegin())},
             {"checkpoint.intermediate", "[" + list + "]"},
             {"checkpoint.intermediate_unit", "\"steps\""},
             {"run.name", toml_string(stable.name)},
             {"run.out_dir", toml_string(sweep.dir)}})
      stable.overrides.push_back({key, toml, c.where});
    try {
      stable.recipe = load_run_recipe(sweep, stable);
    } catch (const Error& e) {
      throw Error(e.where(), "the stable run of " + first.name + ": " + e.detail());
    }
    stable.vocab = first.vocab;
    stable.size = first.size;
    stable.flops = stable.size.flops_per_token * static_cast<double>(stable.recipe.train.tokens);
    stable.members = branching;

    // What the sweep spends per run: its cooldown, and of each stretch of the stable run between
    // two branch points an equal share with the runs that branch after it.
    const double tokens_per_step =
        static_cast<double>(stable.recipe.train.tokens) / static_cast<double>(*points.rbegin());
    const double flops_per_step = stable.size.flops_per_token * tokens_per_step;
    for (const size_t m : branching) {
      SweepRun& run = sweep.runs[m];
      run.stable = stable.index;
      run.branch_step = branch_step_of(run);
      double share = 0;
      int64_t from = 0;
      for (const int64_t b : points) {
        if (b > run.branch_step) break;
        int64_t sharing = 0;
        for (const size_t o : branching)
          sharing += branch_step_of(sweep.runs[o]) >= b;
        share += static_cast<double>(b - from) * flops_per_step / static_cast<double>(sharing);
        from = b;
      }
      run.flops_spent = share + run.flops *
                                    static_cast<double>(run.recipe.train.steps - run.branch_step) /
                                    static_cast<double>(run.recipe.train.steps);
    }
    sweep.stable_runs.push_back(std::move(stable));
  }
}

}  // namespace

std::string shell_quote(const std::string& word) {
  if (!word.empty() && std::all_of(word.begin(), word.end(), [](unsigned char c) {
        return std::isalnum(c) || std::string("._-/=:,+@%").find(c) != std::string::npos;
      }))
    return word;
  std::string out = "'";
  for (char c : word)
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::vector<std::string> SweepRun::set_arguments() const {
  std::vector<std::string> out;
  for (const auto& o : overrides)
    out.push_back(o.key + "=" + o.toml);
  return out;
}

Recipe load_run_recipe(const Sweep& sweep, const SweepRun& run,
                       const std::vector<std::string>& extra_overrides) {
  RecipeOptions options;
  options.world_size = static_cast<int>(sweep.ranks);
  for (const auto& o : run.overrides) {
    options.overrides.push_back(o.key + "=" + o.toml);
    options.override_origins.push_back(o.where);
  }
  for (const auto& o : extra_overrides) {
    options.overrides.push_back(o);
    options.override_origins.push_back("");
  }
  return load_recipe(sweep.recipe_path, options);
}

Sweep load_sweep(const std::string& path) {
  Sweep sweep;
  sweep.path = path;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path, "no such sweep file");
    std::ostringstream s;
    s << in.rdbuf();
    sweep.text = s.str();
  }
  toml::table root;
  try {
    root = toml::parse(sweep.text, path);
  } catch (const toml::parse_error& e) {
    throw Error(path + ":" + std::to_string(e.source().begin.line),
                "invalid TOML: " + std::string(e.description()));
  }

  // ----- [sweep] -----
  const std::vector<std::string> sections = {"sweep", "set", "grid", "zip", "derive", "cooldown"};
  for (const auto& [k, node] : root) {
    const std::string section(k.str());
    if (std::find(sections.begin(), sections.end(), section) == sections.end())
      throw Error(where_of(path, node), section +
                                            ": unknown section; a sweep file has [sweep], [set], "
                                            "[grid], [[zip]], [derive] and [cooldown]");
    if (section == "zip" ? !node.is_array_of_tables() : !node.is_table())
      throw Error(where_of(path, node), section == "zip"
                                            ? "zip: write each zipped axis as a [[zip]] table"
                                            : section + ": expected a [" + section + "] table");
  }
  const toml::table* head = root["sweep"].as_table();
  if (!head) throw Error(path, "[sweep]: missing (it names the base recipe: sweep.recipe)");
  std::string recipe_file;
  std::string run_name_template;
  for (const auto& [k, node] : *head) {
    const std::string key(k.str()), where = where_of(path, node);
    auto text = [&](std::string& out) {
      if (!node.is_string()) throw Error(where, "sweep." + key + ": expected a string");
      out = *node.value<std::string>();
    };
    if (key == "name") {
      text(sweep.name);
      if (!is_folder_name(sweep.name))
        throw Error(where,
                    "sweep.name: must be letters, digits, '.', '_', '-' or '=' (a folder "
                    "name); got \"" +
                        sweep.name + "\"");
    } else if (key == "recipe") {
      text(recipe_file);
    } else if (key == "out_dir") {
      text(sweep.out_dir);
    } else if (key == "launch") {
      text(sweep.launch);
      if (sweep.launch != "inprocess" && sweep.launch != "mpirun")
        throw Error(where,
                    "sweep.launch: must be inprocess or mpirun; got \"" + sweep.launch + "\"");
    } else if (key == "ranks") {
      if (!node.is_integer() || *node.value<int64_t>() < 1)
        throw Error(where, "sweep.ranks: expected an integer >= 1");
      sweep.ranks = *node.value<int64_t>();
    } else if (key == "mpirun") {
      text(sweep.mpirun);
    } else if (key == "run_name") {
      text(run_name_template);
    } else {
      throw Error(where, "sweep." + key +
                             ": unknown key; [sweep] has name, recipe, out_dir, launch, ranks, "
                             "mpirun, run_name");
    }
  }
  if (sweep.name.empty()) throw Error(path, "sweep.name: missing (the sweep folder's name)");
  if (recipe_file.empty()) throw Error(path, "sweep.recipe: missing (the base recipe)");
  sweep.recipe_path = (fs::path(path).parent_path() / recipe_file).lexically_normal().string();
  if (!fs::is_regular_file(sweep.recipe_path))
    throw Error(where_of(path, *head->get("recipe")),
                "sweep.recipe: no such recipe file \"" + sweep.recipe_path + "\"");
  if (sweep.out_dir.empty()) sweep.out_dir = "runs";
  if (sweep.launch.empty()) sweep.launch = sweep.ranks > 1 ? "mpirun" : "inprocess";
  if (sweep.mpirun.empty()) sweep.mpirun = "mpirun";
  if (sweep.launch == "inprocess" && sweep.ranks > 1)
    throw Error(where_of(path, *head->get("ranks")),
                "sweep.ranks: runs of several ranks need sweep.launch = \"mpirun\"");
  sweep.dir = (fs::path(sweep.out_dir) / sweep.name).string();
  if (const toml::table* t = root["cooldown"].as_table()) sweep.cooldown = cooldown_of(*t, path);

  // ----- [set], [grid], [[zip]], [derive] -----
  std::vector<Entry> fixed, derived;
  std::vector<Axis> axes;
  std::vector<std::pair<std::string, std::string>> seen;  // key, where: each key once
  auto claim = [&](const Entry& e) {
    for (const auto& [key, where] : seen)
      if (key == e.key) throw Error(e.where, e.key + ": already given at " + where);
    seen.emplace_back(e.key, e.where);
  };
  // Axes in file order, whatever their section.
  std::vector<std::pair<int64_t, Axis>> ordered_axes;
  if (const toml::table* t = root["set"].as_table())
    for (Entry& e : entries_of(*t, path))
      claim(e), fixed.push_back(e);
  if (const toml::table* t = root["grid"].as_table())
    for (const Entry& e : entries_of(*t, path))
      claim(e), ordered_axes.emplace_back(e.line, axis_from(e, "grid"));
  if (const toml::array* zips = root["zip"].as_array()) {
    for (const auto& z : *zips) {
      const auto entries = entries_of(*z.as_table(), path);
      if (entries.empty()) throw Error(where_of(path, z), "[[zip]]: an empty zip table");
      Axis axis;
      for (const Entry& e : entries) {
        claim(e);
        Axis one = axis_from(e, "zip");
        if (!axis.keys.empty() && one.length() != axis.length())
          throw Error(e.where, e.key + ": zipped lists must be equally long; " + e.key + " has " +
                                   std::to_string(one.length()) + " values, " + axis.keys[0] +
                                   " has " + std::to_string(axis.length()));
        axis.keys.push_back(e.key), axis.wheres.push_back(e.where);
        axis.values.push_back(one.values[0]);
      }
      ordered_axes.emplace_back(entries.front().line, std::move(axis));
    }
  }
  std::stable_sort(ordered_axes.begin(), ordered_axes.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [line, axis] : ordered_axes)
    axes.push_back(std::move(axis));
  if (const toml::table* t = root["derive"].as_table())
    for (const Entry& e : entries_of(*t, path)) {
      claim(e);
      if (!e.node->is_string())
        throw Error(
            e.where,
            e.key + ": a derived value is an expression in a string, as in \"d_model / 64\"");
      derived.push_back(e);
      sweep.derived_keys.push_back(e.key);
    }
  if (sweep.cooldown)
    for (const auto& [key, where] : seen)
      if (std::find(kCooldownKeys.begin(), kCooldownKeys.end(), key) != kCooldownKeys.end())
        throw Error(where, key + ": set by [cooldown] (" + sweep.cooldown->where +
                               "): every run's schedule is warmup-stable-decay with its fraction "
                               "and shape");

  // Which keys vary, and which of them name a run: per axis, the first key whose values are all
  // distinct (in a zip the others follow it); a zip whose entries differ only as tuples, such as
  // (sp, 0), (mup, 0), (mup, 1), is named by every key of it that varies.
  std::vector<std::pair<size_t, size_t>> name_keys;  // (axis, key in axis)
  for (size_t a = 0; a < axes.size(); ++a) {
    const Axis& axis = axes[a];
    bool named = false;
    std::vector<size_t> varying;
    for (size_t k = 0; k < axis.keys.size(); ++k) {
      const std::set<std::string> distinct(axis.values[k].begin(), axis.values[k].end());
      if (distinct.size() > 1) sweep.varied_keys.push_back(axis.keys[k]), varying.push_back(k);
      if (!named && distinct.size() == axis.length() && axis.length() > 1)
        name_keys.emplace_back(a, k), named = true;
      if (axis.keys.size() == 1 && distinct.size() != axis.length())
        throw Error(axis.wheres[k], axis.keys[k] + ": a value repeats; each run would run twice");
    }
    if (!named && axis.length() > 1) {
      std::map<std::vector<std::string>, size_t> entries;  // an entry's values -> its position
      for (size_t j = 0; j < axis.length(); ++j) {
        std::vector<std::string> entry;
        for (size_t k = 0; k < axis.keys.size(); ++k)
          entry.push_back(axis.values[k][j]);
        const auto [it, added] = entries.emplace(entry, j);
        if (!added)
          throw Error(axis.wheres[0], "[[zip]]: entries " + std::to_string(it->second + 1) +
                                          " and " + std::to_string(j + 1) +
                                          " are the same in every key, so their runs would "
                                          "repeat");
      }
      for (size_t k : varying)
        name_keys.emplace_back(a, k);
    }
    sweep.axes.push_back(std::to_string(axis.length()) + " " + axis.keys[0] +
                         (axis.keys.size() > 1
                              ? " (zipped with " + std::to_string(axis.keys.size() - 1) + ")"
                              : ""));
  }
  std::map<std::string, std::string> short_names;  // short name -> key ("" when ambiguous)
  for (const auto& doc : recipe_schema()) {
    const std::string s = short_name(doc.key);
    auto it = short_names.find(s);
    short_names[s] = it == short_names.end() ? doc.key : "";
  }
  auto display = [&](const std::string& key) {
    // A short name in run names unless two varied keys share it.
    int same = 0;
    for (const auto& k : sweep.varied_keys)
      same += short_name(k) == short_name(key);
    return same > 1 ? key : short_name(key);
  };

  // ----- Expand: the product of the axes, the last varying fastest. -----
  size_t total = 1;
  for (const Axis& axis : axes)
    total *= axis.length();
  if (total > 100000)
    throw Error(path, "the sweep expands to " + std::to_string(total) +
                          " runs; more than 100000 is surely a mistake");
  std::map<std::string, int64_t> vocab_cache;
  std::map<std::string, size_t> names;  // run name -> index, for uniqueness
  for (size_t i = 0; i < total; ++i) {
    SweepRun run;
    run.index = static_cast<int64_t>(i);
    RunValues values(sweep, short_names, vocab_cache);
    auto add = [&](const std::string& key, const std::string& toml, const std::string& where) {
      if (is_variable(key)) {
        double v = 0;
        const char* end = nullptr;
        v = std::strtod(toml.c_str(), const_cast<char**>(&end));
        if (toml.empty() || end != toml.c_str() + toml.size())
          throw Error(where, key + ": a sweep variable is a number; got " + toml);
        values.variables[key] = v;
        return;
      }
      run.overrides.push_back({key, toml, where});
      values.add_override(key + "=" + toml, where);
    };
    for (const Entry& e : fixed)
      add(e.key, toml_text(*e.node, e.where, e.key), e.where);
    std::vector<size_t> position(axes.size());
    size_t rest = i;
    for (size_t a = axes.size(); a-- > 0;) {
      position[a] = rest % axes[a].length();
      rest /= axes[a].length();
    }
    std::string default_name;
    for (const auto& [a, k] : name_keys)
      default_name += (default_name.empty() ? "" : "_") + display(axes[a].keys[k]) + "=" +
                      name_text(axes[a].values[k][position[a]]);
    if (default_name.empty()) default_name = "run";
    const std::string label =
        "run " + std::to_string(i + 1) + "/" + std::to_string(total) + " (" + default_name + ")";
    try {
      for (size_t a = 0; a < axes.size(); ++a)
        for (size_t k = 0; k < axes[a].keys.size(); ++k) {
          const std::string& v = axes[a].values[k][position[a]];
          add(axes[a].keys[k], v, axes[a].wheres[k]);
          run.values[axes[a].keys[k]] = v;
        }
      for (const Entry& e : derived) {
        const std::string expr = *e.node->value<std::string>();
        const double v = evaluate_expression(
            expr, [&](const std::string& name) { return values.lookup(name, e.where, expr); },
            e.where);
        const std::string text = derived_text(e.key, v, e.where, expr);
        add(e.key, text, e.where);
        run.values[e.key] = text;
      }
      if (const auto& c = sweep.cooldown)
        for (const auto& [key, toml] : cooldown_overrides(*c))
          add(key, toml, c->where);
      // The run's name: the template's fields, or the values that vary.
      run.name = default_name;
      if (!run_name_template.empty()) {
        run.name.clear();
        const std::string& t = run_name_template;
        for (size_t c = 0; c < t.size(); ++c) {
          if (t[c] != '{') {
            run.name += t[c];
            continue;
          }
          const size_t end = t.find('}', c);
          if (end == std::string::npos)
            throw Error(path, "sweep.run_name: a '{' without '}' in \"" + t + "\"");
          const std::string field = t.substr(c + 1, end - c - 1);
          const double v = values.lookup(field, path + ": sweep.run_name", t);
          run.name += name_text(v == std::round(v) && std::abs(v) < 1e15
                                    ? std::to_string(static_cast<int64_t>(v))
                                    : shortest_float(v));
          c = end;
        }
        if (!is_folder_name(run.name))
          throw Error(path, "sweep.run_name: gives \"" + run.name + "\", not a folder name");
      }
      run.dir = (fs::path(sweep.dir) / run.name).string();
      add("run.name", toml_string(run.name), path + ": the sweep");
      add("run.out_dir", toml_string(sweep.dir), path + ": the sweep");
      run.recipe = load_run_recipe(sweep, run);
      run.vocab = values.vocab_of(run.recipe, path);
    } catch (const Error& e) {
      throw Error(e.where(), label + ": " + e.detail());
    }
    run.size = models::size_accounting(run.recipe.model, run.vocab, run.recipe.data.seq_len);
    run.flops = run.size.flops_per_token * static_cast<double>(run.recipe.train.tokens);
    run.flops_spent = run.flops;
    run.position = position;
    if (auto [it, fresh] = names.emplace(run.name, i); !fresh)
      throw Error(path, "runs " + std::to_string(it->second + 1) + " and " + std::to_string(i + 1) +
                            " are both named \"" + run.name +
                            "\" (sweep.run_name must tell them apart)");
    sweep.runs.push_back(std::move(run));
  }
  if (sweep.cooldown) {
    plan_stable_runs(sweep, axes, [&](size_t a, const SweepRun& run) {
      std::string part;
      for (const auto& [axis, k] : name_keys)
        if (axis == a)
          part += (part.empty() ? "" : "_") + display(axes[a].keys[k]) + "=" +
                  name_text(axes[a].values[k][run.position[a]]);
      return part;
    });
  }
  return sweep;
}

std::string branch_checkpoint(const Sweep& sweep, const SweepRun& run) {
  if (run.stable < 0) return "";
  return checkpoint_path(sweep.stable_runs.at(static_cast<size_t>(run.stable)).dir,
                         run.branch_step);
}

}  // namespace ladder
