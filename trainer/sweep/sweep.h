// Sweep files: many runs of one base recipe, varied along axes (recipes/sweeps/README.md).
//
//   [sweep]                     # what and where
//   name = "chinchilla-tiny"    # the sweep folder: out_dir/name; each run in a folder inside it
//   recipe = "../chinchilla-tiny.toml"   # the base recipe, relative to this file
//   out_dir = "runs"
//   launch = "inprocess"        # inprocess (one rank, in this process) | mpirun (a job per run)
//   ranks = 1                   # ranks per run (mpirun)
//   mpirun = "mpirun"           # the launcher command and its flags
//   run_name = ""               # a template ("d{d_model}-t{tokens}"); empty: the varied values
//   [set]                       # the same overrides for every run
//   checkpoint.intermediate = "log2"
//   [grid]                      # cartesian axes: every combination
//   budget = [3e12, 6e12]       # a sweep variable (no section): read by expressions and names
//   optim.weight_decay = [0.0, 0.1]
//   [[zip]]                     # one axis whose lists advance together
//   model.d_model = [64, 96, 128]
//   model.n_layers = [2, 3, 4]
//   [derive]                    # expressions (trainer/recipe/expression.h), in order, after the
//   axes model.n_heads = "d_model / 32" optim.lr = "3e-3 * 128 / d_model" train.tokens =
//   "round(budget / flops_per_token)"
//   [cooldown]                  # optional: the runs of each length share one stable phase
//   fraction = 0.2              # each run's cooldown: the last fraction of its steps
//   shape = "1-sqrt"            # linear | 1-sqrt
//
// Runs are the cartesian product of the axes in file order (the last axis varies fastest). Each
// run is the base recipe with, in order, the [set] overrides, its axis values, its derived values,
// and run.name / run.out_dir set by the sweep; it is loaded and validated like `ladder train`
// would for `ranks` ranks before anything starts. A mistake names the sweep file, the line and
// the run. Expressions read every recipe key by its full name (model.d_model) or its short name
// when that is unique (d_model), with the values given so far, the sweep variables, and the size
// accounting of the model so far: N (non-embedding parameters), N_total, N_active,
// flops_per_token, vocab.
//
// With [cooldown] every run trains with a warmup-stable-decay schedule whose decay is its last
// `fraction` of steps (schedule.kind, decay_fraction and decay_shape are the section's), and the
// runs that differ only in their length share one stable run (Haegele et al. 2024; OLMo-core's WSD
// ladders): the axes along which train.steps varies are length axes; the runs at the same position
// on every other axis form a group. Its stable run trains at the peak learning rate to the group's
// last branch point, writing an intermediate checkpoint at every run's branch point T - round(f T),
// and each run is a cooldown branched from it (`ladder train --branch-from`, trainer/run/branch.h).
// Everything a branch may not change (branch_free_keys) must be equal across a group: a key that
// differs is an error naming it and two of its runs.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "models/model.h"
#include "optim/config.h"
#include "trainer/recipe/recipe.h"

namespace ladder {

// One override of a run: `key = toml`, written at `where` (sweep.toml:12).
struct SweepOverride {
  std::string key;
  std::string toml;
  std::string where;
};

struct SweepRun {
  int64_t index = 0;                          // position in the plan, from 0
  std::string name;                           // its folder in the sweep folder
  std::string dir;                            // sweep folder / name
  std::vector<SweepOverride> overrides;       // [set], axis values, derived values, name, out_dir
  std::map<std::string, std::string> values;  // every axis and derived key or variable -> TOML
  Recipe recipe;                              // resolved for the sweep's ranks
  models::SizeAccounting size;
  int64_t vocab = 0;
  double flops = 0;              // the run's training FLOPs: flops_per_token x train.tokens
  std::vector<size_t> position;  // the run's value of each axis (an index into its list)

  // [cooldown]: the stable run this run branches from (an index into Sweep::stable_runs; -1: it
  // trains from scratch), the step it branches at, and the FLOPs the sweep spends for it (its
  // cooldown and its share of the stable run); = flops for a run that trains from scratch.
  int64_t stable = -1;
  int64_t branch_step = 0;
  double flops_spent = 0;
  std::vector<size_t> members;  // a stable run: the runs that branch from it, in plan order

  // The overrides as `--set` arguments ("model.d_model=64").
  std::vector<std::string> set_arguments() const;
};

// The sweep's [cooldown] section.
struct SweepCooldown {
  double fraction = 0.2;
  optim::DecayShape shape = optim::DecayShape::OneMinusSqrt;
  std::string where;  // sweep.toml:N, for messages
};

struct Sweep {
  std::string path;         // the sweep file
  std::string text;         // its contents (copied into the sweep folder)
  std::string name;         // sweep.name
  std::string recipe_path;  // the base recipe, as a path from the working directory
  std::string out_dir;
  std::string dir;     // out_dir / name
  std::string launch;  // "inprocess" | "mpirun"
  int64_t ranks = 1;
  std::string mpirun;
  std::vector<std::string> varied_keys;   // keys with more than one value over the runs, in order
  std::vector<std::string> derived_keys;  // keys of [derive], in order
  std::vector<std::string> axes;          // for the plan: "4 model.d_model", "3 train.tokens"
  std::vector<SweepRun> runs;
  std::optional<SweepCooldown> cooldown;
  std::vector<SweepRun> stable_runs;  // [cooldown]: one per group of runs of several lengths
};

// The checkpoint a cooldown run branches from ("" for a run that trains from scratch).
std::string branch_checkpoint(const Sweep& sweep, const SweepRun& run);

// Reads, expands and validates a sweep file. Throws ladder::Error.
Sweep load_sweep(const std::string& path);

// A run's recipe as it would run: the base recipe with the run's overrides (for `ranks` ranks).
Recipe load_run_recipe(const Sweep& sweep, const SweepRun& run,
                       const std::vector<std::string>& extra_overrides = {});

// Shell-quotes a word ('...' with embedded quotes escaped), for printed and generated commands.
std::string shell_quote(const std::string& word);

}  // namespace ladder
