#include "trainer/run/branch.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <toml++/toml.h>

#include "core/error.h"
#include "core/format.h"
#include "optim/schedule.h"
#include "trainer/run/checkpoint.h"

namespace ladder {
namespace fs = std::filesystem;

const std::vector<std::string>& branch_free_keys() {
  static const std::vector<std::string> keys = {
      // Its length and the end of its schedule: what makes it a branch.
      "train.steps", "train.tokens", "schedule.kind", "schedule.decay_fraction",
      "schedule.decay_shape", "schedule.final_lr_fraction",
      // Where it writes and how often it logs, evaluates and keeps checkpoints.
      "run.name", "run.out_dir", "train.log_every", "train.peak_gflops", "eval.every_steps",
      "eval.spectra_every_steps", "eval.average", "eval.ema_decay", "checkpoint.every_steps",
      "checkpoint.keep", "checkpoint.intermediate", "checkpoint.intermediate_unit",
      // How it runs: the layout, micro-batching, threads, device and kernels (checkpoints are
      // logical). train.precision is compared with the precision the checkpoint was trained in.
      "parallel.tp", "parallel.pp", "parallel.dp", "parallel.ep", "parallel.sequence_parallel",
      "parallel.schedule", "parallel.virtual_stages", "parallel.stage_layers",
      "parallel.stage_balance", "parallel.microbatches", "parallel.bucket_mb",
      "parallel.overlap_grad_reduce", "optim.zero", "train.micro_batch", "train.threads",
      "train.device", "train.fused_kernels", "train.fused_cuda_kernels", "train.sync_free_step",
      "train.cuda_graph", "train.precision"};
  return keys;
}

Branch check_branch(const Recipe& r, const std::string& checkpoint) {
  const std::string where = "--branch-from " + checkpoint;
  const CheckpointMeta meta = read_checkpoint_meta(checkpoint);
  if (meta.islands > 0 || r.parallel.islands > 1 || r.diloco.single_island)
    throw Error(where,
                "branching a run with DiLoCo's outer loop is not supported: its outer state would "
                "have to be shared by the branch");
  const Recipe parent = checkpoint_recipe(meta, checkpoint);
  const std::vector<std::string>& free = branch_free_keys();
  for (const RecipeKeyDoc& key : recipe_schema()) {
    if (std::find(free.begin(), free.end(), key.key) != free.end()) continue;
    const std::string mine = recipe_value_toml(r, key.key);
    const std::string theirs = recipe_value_toml(parent, key.key);
    if (mine != theirs)
      throw Error(where, key.key + " differs from the parent's: " + mine + " here, " + theirs +
                             " in the checkpoint's recipe (a branch may change only its length, "
                             "the end of its schedule, its outputs and its layout)");
  }
  const std::string precision = choice_name(kPrecisionNames, r.train.precision);
  if (!meta.precision.empty() && meta.precision != precision)
    throw Error(where, "train.precision differs from the parent's: \"" + precision +
                           "\" here, the checkpoint was trained in \"" + meta.precision + "\"");
  if (meta.step >= r.train.steps)
    throw Error(where, "the checkpoint is at step " + std::to_string(meta.step) +
                           ": the branch's train.steps (" + std::to_string(r.train.steps) +
                           ") must lie beyond it");
  // The steps the branch shares with its parent are the steps a run of its length takes: the same
  // learning rate at each of them (warm-up and stable phase).
  for (int64_t step = 0; step < meta.step; ++step) {
    const double mine = optim::lr_at(step, r.train.steps, r.optim.lr, r.schedule);
    const double theirs = optim::lr_at(step, parent.train.steps, parent.optim.lr, parent.schedule);
    if (mine != theirs)
      throw Error(where,
                  "the schedule differs from the parent's before the branch step " +
                      std::to_string(meta.step) + ": at step " + std::to_string(step + 1) +
                      " the learning rate is " + shortest_float(mine) + " here, " +
                      shortest_float(theirs) +
                      " in the parent (branch from a checkpoint of the parent's stable phase, "
                      "with a cooldown that starts at or after it: schedule.decay_fraction x "
                      "train.steps <= train.steps - " +
                      std::to_string(meta.step) + ")");
  }
  Branch b;
  b.checkpoint = checkpoint;
  b.parent_run = fs::path(checkpoint).parent_path().parent_path().string();
  b.step = meta.step;
  b.tokens = meta.tokens;
  b.parent_flops = meta.accounting.flops_per_token * static_cast<double>(meta.tokens);
  return b;
}

namespace {
std::string record_path(const std::string& run_dir) {
  return (fs::path(run_dir) / "branch.toml").string();
}
}  // namespace

void write_branch_record(const Branch& b, const std::string& run_dir) {
  const std::string path = record_path(run_dir), tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << "# This run is a branch (ladder train --branch-from): it started from this checkpoint.\n"
        << "checkpoint = " << toml_string(b.checkpoint) << "\n"
        << "parent_run = " << toml_string(b.parent_run) << "\n"
        << "step = " << b.step << "\n"
        << "tokens = " << b.tokens << "\n"
        << "parent_flops = " << shortest_float(b.parent_flops) << "\n";
    if (!out) throw Error(tmp, "cannot be written");
  }
  fs::rename(tmp, path);
}

std::optional<Branch> read_branch_record(const std::string& run_dir) {
  const std::string path = record_path(run_dir);
  if (!fs::exists(path)) return std::nullopt;
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw Error(path, "cannot be read: " + std::string(e.description()));
  }
  const auto checkpoint = t["checkpoint"].value<std::string>();
  const auto parent_run = t["parent_run"].value<std::string>();
  const auto step = t["step"].value<int64_t>(), tokens = t["tokens"].value<int64_t>();
  const auto parent_flops = t["parent_flops"].value<double>();
  if (!checkpoint || !parent_run || !step || !tokens || !parent_flops)
    throw Error(path, "incomplete: it needs checkpoint, parent_run, step, tokens and parent_flops");
  return Branch{*checkpoint, *parent_run, *step, *tokens, *parent_flops};
}

Attributes branch_attributes(const std::optional<Branch>& b) {
  return {{"branch_of", b ? b->parent_run : std::string()},
          {"branch_checkpoint", b ? b->checkpoint : std::string()},
          {"branch_step", b ? b->step : int64_t{0}},
          {"parent_flops", b ? b->parent_flops : 0.0}};
}

}  // namespace ladder
