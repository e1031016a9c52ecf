// Recipes: TOML files that describe a run (recipes/README.md documents every key).
//
// load_recipe() reads a file, follows its `base = "..."` chain, applies `--set section.key=value`
// overrides, checks every key against the schema (type, range, choices) and every combination
// against the others (d_model divisible by n_heads, parallel sizes multiplying to the world size,
// ...). Any mistake is a ladder::Error that names the file and line the value came from:
//     ladder: error: recipe.toml:12: model.d_model: must be divisible by model.n_heads (6); got 256
// Nothing else in ladder reads TOML recipes: everything downstream uses the typed Recipe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/choice.h"
#include "models/config.h"
#include "optim/config.h"
#include "parallel/config.h"

namespace ladder {

using models::HybridConfig;
using models::ModelConfig;
using models::MoeConfig;
using models::ParscaleConfig;
using optim::MupConfig;
using optim::OptimConfig;
using optim::ScheduleConfig;

struct RunConfig {
  std::string name;
  std::string out_dir;
  int64_t seed = 0;
};

struct DataConfig {
  std::string path;
  int64_t seq_len = 0;
  // A weighted mixture of sources (core/data_source.h) in place of data.path's whole training
  // split: the sampler of data/loader.h. Empty: the whole split.
  std::vector<std::string> mixture;
  std::vector<double> weights;  // one per source, >= 0, not all 0; normalised to sum 1
};

struct ParallelConfig {
  int64_t tp = 1, pp = 1;
  int64_t dp = 0;  // resolved: 0 in the file means world / (tp * pp * islands)
  int64_t islands = 1;
  int64_t ep = 1;  // expert parallelism, carved out of dp
  bool sequence_parallel = false;
  parallel::ScheduleKind schedule = parallel::ScheduleKind::OneFOneB;
  int64_t virtual_stages = 1;         // model chunks per pipeline rank (interleaved)
  std::vector<int64_t> stage_layers;  // explicit layers per virtual stage; empty: balanced
  parallel::StageBalance stage_balance = parallel::StageBalance::Flops;
  int64_t microbatches = 0;  // resolved: global_batch / (dp * micro_batch)
  double bucket_mb = 0;      // gradient bucket size for the data-parallel reduction
  bool overlap_grad_reduce = false;
};

// DiLoCo (parallel/diloco.h): runs when parallel.islands > 1, or with one island when
// single_island.
struct DilocoConfig {
  int64_t inner_steps = 100;  // H
  double outer_lr = 0.7;
  double outer_momentum = 0.9;  // Nesterov
  int64_t fragments = 1;        // streaming DiLoCo: F staggered pieces of the model
  int64_t overlap_steps = 0;    // tau: inner steps an exchange overlaps before it is applied
  double mixing = 0.5;          // alpha: island = alpha island + (1 - alpha) global, with tau > 0
  parallel::PseudoGradDtype pseudo_grad_dtype = parallel::PseudoGradDtype::Fp32;
  parallel::InnerState inner_state = parallel::InnerState::Keep;
  bool single_island = false;  // run the outer loop over one island too
};

// train.precision: Auto until resolved at start (trainer/run/hardware.h).
enum class Precision { Auto, Fp32, Bf16 };
inline constexpr Choice<Precision> kPrecisionNames[] = {
    {Precision::Fp32, "fp32"}, {Precision::Bf16, "bf16"}, {Precision::Auto, "auto"}};

// train.device.
enum class DeviceKind { Cpu, Cuda };
inline constexpr Choice<DeviceKind> kDeviceKindNames[] = {{DeviceKind::Cpu, "cpu"},
                                                          {DeviceKind::Cuda, "cuda"}};

struct TrainConfig {
  int64_t steps = 0;   // resolved from tokens when the recipe gives tokens
  int64_t tokens = 0;  // resolved from steps when the recipe gives steps
  int64_t global_batch = 0;
  int64_t micro_batch = 0;
  int64_t log_every = 0;
  double peak_gflops = 0;                 // 0: measure the matmul peak at start
  Precision precision = Precision::Auto;  // fp32 or bf16 once resolved at start
  DeviceKind device = DeviceKind::Cpu;
  int64_t threads = 0;        // resolved at start: cores / ranks on the node when 0
  bool fused_kernels = true;  // kernels/' fused CPU kernels (build_model, optim::AdamWKernels)
  bool fused_cuda_kernels = false;  // kernels/cuda.h, with fused_kernels on train.device = cuda
  bool sync_free_step = false;      // trainer/run/train_step.cpp: the device-side update and reads
  bool cuda_graph = false;          // trainer/run/step_graph.h
};

// `checkpoint.intermediate`: "log2" (every power of two), "none", or an explicit list of points.
enum class IntermediateRule { Log2, None, List };
inline constexpr Choice<IntermediateRule> kIntermediateRuleNames[] = {
    {IntermediateRule::Log2, "log2"}, {IntermediateRule::None, "none"}};  // List: an array
struct IntermediateSchedule {
  IntermediateRule rule = IntermediateRule::Log2;
  std::vector<int64_t> points;  // when rule == List, in checkpoint.intermediate_unit
};

// checkpoint.intermediate_unit: what the points of an explicit list count.
enum class PointUnit { Steps, Tokens };
inline constexpr Choice<PointUnit> kPointUnitNames[] = {{PointUnit::Steps, "steps"},
                                                        {PointUnit::Tokens, "tokens"}};

struct CheckpointConfig {
  int64_t every_steps = 0;
  int64_t keep = 0;
  IntermediateSchedule intermediate;
  PointUnit intermediate_unit = PointUnit::Steps;
};

// eval.average: evaluate an average of the weights too (trainer/run/weight_average.h).
enum class WeightAverage { None, Ema, Window };
inline constexpr Choice<WeightAverage> kWeightAverageNames[] = {
    {WeightAverage::None, "none"}, {WeightAverage::Ema, "ema"}, {WeightAverage::Window, "window"}};

struct EvalConfig {
  int64_t every_steps = 0;
  int64_t tokens = 0;
  int64_t spectra_every_steps = 0;  // hidden matrices' top singular values into the trace
  WeightAverage average = WeightAverage::None;
  double ema_decay = 0;  // eval.average = "ema": the average's decay per step
  // Validation sets besides data.path's whole validation split (core/data_source.h), each with
  // its own loss column.
  std::vector<std::string> sets;
};

struct Recipe;
// Whether the run trains with DiLoCo's outer loop (islands > 1, or diloco.single_island).
bool diloco_active(const Recipe& r);

struct Recipe {
  RunConfig run;
  DataConfig data;
  ModelConfig model;  // with [moe], [hybrid] and [parscale] (model.moe, ...)
  ParallelConfig parallel;
  DilocoConfig diloco;
  TrainConfig train;
  OptimConfig optim;
  ScheduleConfig schedule;
  MupConfig mup;
  CheckpointConfig checkpoint;
  EvalConfig eval;

  std::string source;  // the top recipe file (or the name given to parse_recipe)
  // Keys whose value was computed rather than given (parallel.dp, train.tokens, ...). The resolved
  // recipe writes them as 0 so that it stays valid at any world size.
  std::vector<std::string> derived;
  bool is_derived(const std::string& key) const;
};

struct RecipeOptions {
  std::vector<std::string> overrides;  // "section.key=value", applied in order after the files
  int world_size = 1;                  // the number of ranks the run will have
  // Where each override came from ("sweep.toml:12"), for messages; empty: "--set key=value".
  std::vector<std::string> override_origins;
};

// Reads, resolves and validates a recipe file. Throws ladder::Error on any mistake.
Recipe load_recipe(const std::string& path, const RecipeOptions& options = {});

// The same from TOML text; `name` stands for the file in messages and `base` paths resolve from
// `dir`.
Recipe parse_recipe(const std::string& text, const std::string& name, const std::string& dir,
                    const RecipeOptions& options = {});

// Every key with its resolved value, in schema order, as TOML that load_recipe() reads back to the
// same Recipe. This is what a run prints at start and saves as recipe.toml.
std::string resolved_recipe_toml(const Recipe& recipe);

// Whether `name` may name a run's (or a sweep's) folder: letters, digits, '.', '_', '-' and '=',
// not starting with '.'.
bool is_folder_name(const std::string& name);

// `s` as a TOML basic string, quoted and escaped.
std::string toml_string(const std::string& s);

// Writes resolved_recipe_toml() to `path` atomically.
void write_resolved_recipe(const Recipe& recipe, const std::string& path);

// A key's value as given (files, overrides, defaults), before cross-checks and derivations: what
// the expressions of sweep files read.
struct GivenValue {
  std::string toml;      // the value as TOML text: 256, 0.003, "cosine", [2, 2]
  bool numeric = false;  // an integer or a float (then `number` holds it)
  double number = 0;
  std::string where;  // file:line or --set ..., or "default"
};
// Every key of the schema. Throws ladder::Error for an unknown key or a value of the wrong type.
std::map<std::string, GivenValue> given_recipe_values(const std::string& path,
                                                      const RecipeOptions& options = {});

// A resolved recipe's value of `key` as TOML text (as resolved_recipe_toml writes it); throws
// std::out_of_range for a key outside the schema.
std::string recipe_value_toml(const Recipe& recipe, const std::string& key);

// The type of `key` ("integer", "float", ...; recipe_schema's names), or "" outside the schema.
std::string recipe_key_type(const std::string& key);

// The schema, for documentation and tests: "section.key" and a one-line description, in order.
struct RecipeKeyDoc {
  std::string key;
  std::string type;
  std::string default_value;
  std::string doc;
};
std::vector<RecipeKeyDoc> recipe_schema();

}  // namespace ladder
