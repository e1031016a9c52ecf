#include "trainer/run/trace.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/error.h"
#include "core/hdf5.h"
#include "core/trace_schema.h"

namespace ladder {
namespace {

namespace schema = trace_schema;

struct Column {
  std::string name;
  bool integer;
};

std::vector<Column> columns_of(const std::vector<schema::Column>& declared) {
  std::vector<Column> out;
  for (const auto& c : declared)
    out.push_back({std::string(c.name), c.type == schema::Type::Integer});
  return out;
}

// The train columns with those of each of `stages` pipeline stages.
std::vector<Column> train_columns(int stages) {
  std::vector<Column> cols = columns_of(schema::train_columns());
  for (int s = 0; s < stages; ++s)
    for (const auto& c : schema::stage_columns())
      cols.push_back({std::string(c.name) + std::to_string(s), false});
  return cols;
}
// The eval columns with those of each eval set.
std::vector<Column> eval_columns(const std::vector<std::string>& sets) {
  std::vector<Column> cols = columns_of(schema::eval_columns());
  for (const auto& set : sets)
    for (const auto& c : schema::eval_set_columns())
      cols.push_back({std::string(c.name) + set, false});
  return cols;
}
const std::vector<Column> kCheckpoints = columns_of(schema::checkpoint_columns());

const schema::Column* train_column(std::string_view name) {
  for (const auto& c : schema::train_columns())
    if (c.name == name) return &c;
  return nullptr;
}

void create_group(const h5::File& f, const std::string& group, const std::vector<Column>& cols) {
  for (const auto& c : cols)
    h5::create_series(f, group + "/" + c.name, c.integer ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE);
}

// Adds the columns an older trace lacks, NaN (or 0 for integers) in its existing rows.
void add_missing(const h5::File& f, const std::string& group, const std::vector<Column>& cols) {
  const int64_t rows = h5::series_length(f, group + "/step");
  for (const auto& c : cols) {
    const std::string path = group + "/" + c.name;
    if (h5::exists(f, path)) continue;
    h5::create_series(f, path, c.integer ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE);
    for (int64_t i = 0; i < rows; ++i)
      c.integer ? h5::append_series(f, path, int64_t{0})
                : h5::append_series(f, path, std::numeric_limits<double>::quiet_NaN());
  }
}

// Drops the rows of `group` whose step is past `step`.
void truncate_after(const h5::File& f, const std::string& group, const std::vector<Column>& cols,
                    int64_t step) {
  const torch::Tensor steps = h5::read_tensor(f, group + "/step");
  int64_t keep = 0;
  const int64_t* s = steps.data_ptr<int64_t>();
  while (keep < steps.numel() && s[keep] <= step)
    ++keep;
  for (const auto& c : cols)
    h5::truncate_series(f, group + "/" + c.name, keep);
}

// A trace that cannot be read (a kill in the middle of an append) is replaced by its backup.
void restore_if_damaged(const std::string& path) {
  try {
    h5::File f = h5::File::open(path, false);
    h5::series_length(f, "train/step");
    return;
  } catch (const Error& e) {
    const std::string backup = path + ".bak", damaged = path + ".damaged";
    if (!std::filesystem::exists(backup))
      throw Error(path, "cannot be read (" + e.detail() +
                            ") and has no backup (trace.h5.bak, written with each checkpoint)");
    std::filesystem::rename(path, damaged);
    std::filesystem::copy_file(backup, path);
    spdlog::warn(
        "{} cannot be read ({}): restored from {}, written with the last checkpoint; the "
        "damaged file is kept as {}",
        path, e.detail(), backup, damaged);
  }
}

}  // namespace

void Trace::back_up() const {
  const std::string tmp = path_ + ".bak.tmp";
  std::filesystem::copy_file(path_, tmp, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::rename(tmp, path_ + ".bak");
}

Trace::Trace(std::string path, const std::map<std::string, TraceAttribute>& attributes,
             int64_t resume_step, int stages, std::vector<std::string> spectra,
             std::vector<std::string> eval_sets)
    : path_(std::move(path)),
      stages_(stages),
      spectra_(std::move(spectra)),
      eval_sets_(std::move(eval_sets)) {
  const std::vector<Column> train = train_columns(stages);
  const std::vector<Column> eval = eval_columns(eval_sets_);
  std::vector<Column> spectra_columns = {{"step", true}};
  for (const auto& name : spectra_)
    spectra_columns.push_back({name, false});
  const bool reuse = resume_step >= 0 && std::filesystem::exists(path_);
  if (reuse) restore_if_damaged(path_);
  h5::File f = reuse ? h5::File::open(path_, true) : h5::File::create(path_);
  if (reuse) {
    add_missing(f, "train", train);
    add_missing(f, "eval", eval);
    add_missing(f, "checkpoints", kCheckpoints);
    add_missing(f, "spectra", spectra_columns);
    truncate_after(f, "train", train, resume_step);
    truncate_after(f, "eval", eval, resume_step);
    truncate_after(f, "checkpoints", kCheckpoints, resume_step);
    truncate_after(f, "spectra", spectra_columns, resume_step);
  } else {
    create_group(f, "train", train);
    create_group(f, "eval", eval);
    create_group(f, "checkpoints", kCheckpoints);
    create_group(f, "spectra", spectra_columns);
  }
  h5::set_attr(f, "/", "format", std::string("ladder-trace"));
  h5::set_attr(f, "/", "version", schema::kVersion);
  for (const auto& [name, value] : attributes)
    if (!schema::has_attribute(name))
      throw std::logic_error("trace attribute " + name + " is not declared in core/trace_schema.h");
  for (const auto& [name, value] : attributes)
    std::visit([&](const auto& v) { h5::set_attr(f, "/", name, v); }, value);
  f.close();
}

void TrainRecord::set(std::string_view column, double value) {
  if (!train_column(column))
    throw std::logic_error("train column " + std::string(column) +
                           " is not declared in core/trace_schema.h");
  values_.insert_or_assign(std::string(column), value);
}

double TrainRecord::get(std::string_view column) const {
  if (const auto it = values_.find(column); it != values_.end()) return it->second;
  const schema::Column* c = train_column(column);
  if (!c)
    throw std::logic_error("train column " + std::string(column) +
                           " is not declared in core/trace_schema.h");
  return c->missing;
}

void Trace::append(const TrainRecord& r) {
  h5::File f = h5::File::open(path_, true);
  for (const auto& c : schema::train_columns()) {
    const std::string path = schema::path("train", c.name);
    const double v = r.get(c.name);
    if (c.type == schema::Type::Integer)
      h5::append_series(f, path, static_cast<int64_t>(v));
    else
      h5::append_series(f, path, v);
  }
  for (int s = 0; s < stages_; ++s) {
    const auto at = [&](const std::vector<double>& v) {
      return s < static_cast<int>(v.size()) ? v[s] : std::numeric_limits<double>::quiet_NaN();
    };
    const auto& stage = schema::stage_columns();
    h5::append_series(f, "train/" + std::string(stage[0].name) + std::to_string(s),
                      at(r.stage_bubble));
    h5::append_series(f, "train/" + std::string(stage[1].name) + std::to_string(s),
                      at(r.stage_activation_bytes));
  }
  f.close();
}

void Trace::append(const EvalRecord& r) {
  h5::File f = h5::File::open(path_, true);
  h5::append_series(f, schema::path("eval", "step"), r.step);
  h5::append_series(f, schema::path("eval", "tokens"), r.tokens);
  h5::append_series(f, schema::path("eval", "flops"), r.flops);
  h5::append_series(f, schema::path("eval", "loss"), r.loss);
  h5::append_series(f, schema::path("eval", "average_loss"), r.average_loss);
  h5::append_series(f, schema::path("eval", "bytes_per_token"), r.bytes_per_token);
  const auto& set_columns = schema::eval_set_columns();
  for (size_t i = 0; i < eval_sets_.size(); ++i) {
    const auto at = [&](const std::vector<double>& v) {
      return i < v.size() ? v[i] : std::numeric_limits<double>::quiet_NaN();
    };
    h5::append_series(f, "eval/" + std::string(set_columns[0].name) + eval_sets_[i],
                      at(r.set_loss));
    h5::append_series(f, "eval/" + std::string(set_columns[1].name) + eval_sets_[i],
                      at(r.set_bytes_per_token));
  }
  f.close();
}

void Trace::append_spectra(int64_t step, const std::vector<double>& top_singular_values) {
  h5::File f = h5::File::open(path_, true);
  h5::append_series(f, "spectra/step", step);
  for (size_t i = 0; i < spectra_.size(); ++i)
    h5::append_series(f, "spectra/" + spectra_[i], top_singular_values.at(i));
  f.close();
}

void Trace::append_checkpoint(int64_t step, int64_t tokens, bool intermediate) {
  h5::File f = h5::File::open(path_, true);
  h5::append_series(f, schema::path("checkpoints", "step"), step);
  h5::append_series(f, schema::path("checkpoints", "tokens"), tokens);
  h5::append_series(f, schema::path("checkpoints", "intermediate"),
                    static_cast<int64_t>(intermediate));
  f.close();
}

}  // namespace ladder
