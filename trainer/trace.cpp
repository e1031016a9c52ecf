#include "trainer/trace.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/hdf5.h"

namespace ladder {
namespace {

// 2: step_s, compute_s, comm_s, comm_bytes; 3: tp_comm_*; 4: pp_p2p_bytes, stage_*; 5: spectra;
// 6: ep_comm_*, moe_*; 7: diloco_*
constexpr int64_t kTraceVersion = 7;

struct Column {
  std::string name;
  bool integer;
};
const std::vector<Column> kTrain = {{"step", true},
                                    {"tokens", true},
                                    {"flops", false},
                                    {"loss", false},
                                    {"lr", false},
                                    {"grad_norm", false},
                                    {"tokens_per_s", false},
                                    {"mfu", false},
                                    {"elapsed_s", false},
                                    {"step_s", false},
                                    {"compute_s", false},
                                    {"comm_s", false},
                                    {"comm_bytes", false},
                                    {"tp_comm_s", false},
                                    {"tp_comm_bytes", false},
                                    {"pp_p2p_bytes", false},
                                    {"ep_comm_s", false},
                                    {"ep_comm_bytes", false},
                                    {"moe_aux_loss", false},
                                    {"moe_z_loss", false},
                                    {"moe_load_max_over_mean", false},
                                    {"moe_load_cv", false},
                                    {"moe_dropped_fraction", false},
                                    {"diloco_bytes_per_token", false},
                                    {"diloco_dp_bytes_per_token", false},
                                    {"diloco_outer_s", false}};

// The train columns with those of each of `stages` pipeline stages.
std::vector<Column> train_columns(int stages) {
  std::vector<Column> cols = kTrain;
  for (int s = 0; s < stages; ++s)
    for (const char* what : {"stage_bubble_", "stage_activation_bytes_"})
      cols.push_back({what + std::to_string(s), false});
  return cols;
}
const std::vector<Column> kEval = {
    {"step", true}, {"tokens", true}, {"flops", false}, {"loss", false}};
const std::vector<Column> kCheckpoints = {{"step", true}, {"tokens", true}, {"intermediate", true}};

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
             int64_t resume_step, int stages, std::vector<std::string> spectra)
    : path_(std::move(path)), stages_(stages), spectra_(std::move(spectra)) {
  const std::vector<Column> train = train_columns(stages);
  std::vector<Column> spectra_columns = {{"step", true}};
  for (const auto& name : spectra_)
    spectra_columns.push_back({name, false});
  const bool reuse = resume_step >= 0 && std::filesystem::exists(path_);
  if (reuse) restore_if_damaged(path_);
  h5::File f = reuse ? h5::File::open(path_, true) : h5::File::create(path_);
  if (reuse) {
    add_missing(f, "train", train);
    add_missing(f, "eval", kEval);
    add_missing(f, "checkpoints", kCheckpoints);
    add_missing(f, "spectra", spectra_columns);
    truncate_after(f, "train", train, resume_step);
    truncate_after(f, "eval", kEval, resume_step);
    truncate_after(f, "checkpoints", kCheckpoints, resume_step);
    truncate_after(f, "spectra", spectra_columns, resume_step);
  } else {
    create_group(f, "train", train);
    create_group(f, "eval", kEval);
    create_group(f, "checkpoints", kCheckpoints);
    create_group(f, "spectra", spectra_columns);
  }
  h5::set_attr(f, "/", "format", std::string("ladder-trace"));
  h5::set_attr(f, "/", "version", kTraceVersion);
  for (const auto& [name, value] : attributes)
    std::visit([&](const auto& v) { h5::set_attr(f, "/", name, v); }, value);
  f.close();
}

void Trace::append(const TrainRecord& r) {
  h5::File f = h5::File::open(path_, true);
  h5::append_series(f, "train/step", r.step);
  h5::append_series(f, "train/tokens", r.tokens);
  h5::append_series(f, "train/flops", r.flops);
  h5::append_series(f, "train/loss", r.loss);
  h5::append_series(f, "train/lr", r.lr);
  h5::append_series(f, "train/grad_norm", r.grad_norm);
  h5::append_series(f, "train/tokens_per_s", r.tokens_per_s);
  h5::append_series(f, "train/mfu", r.mfu);
  h5::append_series(f, "train/elapsed_s", r.elapsed_s);
  h5::append_series(f, "train/step_s", r.step_s);
  h5::append_series(f, "train/compute_s", r.compute_s);
  h5::append_series(f, "train/comm_s", r.comm_s);
  h5::append_series(f, "train/comm_bytes", r.comm_bytes);
  h5::append_series(f, "train/tp_comm_s", r.tp_comm_s);
  h5::append_series(f, "train/tp_comm_bytes", r.tp_comm_bytes);
  h5::append_series(f, "train/pp_p2p_bytes", r.pp_p2p_bytes);
  h5::append_series(f, "train/ep_comm_s", r.ep_comm_s);
  h5::append_series(f, "train/ep_comm_bytes", r.ep_comm_bytes);
  h5::append_series(f, "train/moe_aux_loss", r.moe_aux_loss);
  h5::append_series(f, "train/moe_z_loss", r.moe_z_loss);
  h5::append_series(f, "train/moe_load_max_over_mean", r.moe_load_max_over_mean);
  h5::append_series(f, "train/moe_load_cv", r.moe_load_cv);
  h5::append_series(f, "train/moe_dropped_fraction", r.moe_dropped_fraction);
  h5::append_series(f, "train/diloco_bytes_per_token", r.diloco_bytes_per_token);
  h5::append_series(f, "train/diloco_dp_bytes_per_token", r.diloco_dp_bytes_per_token);
  h5::append_series(f, "train/diloco_outer_s", r.diloco_outer_s);
  for (int s = 0; s < stages_; ++s) {
    const auto at = [&](const std::vector<double>& v) {
      return s < static_cast<int>(v.size()) ? v[s] : std::numeric_limits<double>::quiet_NaN();
    };
    h5::append_series(f, "train/stage_bubble_" + std::to_string(s), at(r.stage_bubble));
    h5::append_series(f, "train/stage_activation_bytes_" + std::to_string(s),
                      at(r.stage_activation_bytes));
  }
  f.close();
}

void Trace::append(const EvalRecord& r) {
  h5::File f = h5::File::open(path_, true);
  h5::append_series(f, "eval/step", r.step);
  h5::append_series(f, "eval/tokens", r.tokens);
  h5::append_series(f, "eval/flops", r.flops);
  h5::append_series(f, "eval/loss", r.loss);
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
  h5::append_series(f, "checkpoints/step", step);
  h5::append_series(f, "checkpoints/tokens", tokens);
  h5::append_series(f, "checkpoints/intermediate", static_cast<int64_t>(intermediate));
  f.close();
}

}  // namespace ladder
