// Everything a training run is made of, built by one function: the process mesh, this rank's
// pipeline stage of the model on its device, the pipeline schedule, the parametrization's rules,
// the gradient reduction (data and expert parallelism), AdamW, the global gradient norm, DiLoCo,
// the checkpoint layout and the data loaders. `ladder train`, `ladder coordcheck` and
// bench_train_step all build it, so each runs the trainer's own set-up and step
// (trainer/run/train_step.h).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "models/model.h"
#include "optim/adamw.h"
#include "optim/grad_norm.h"
#include "optim/parametrization.h"
#include "parallel/diloco.h"
#include "parallel/gradient_reduction.h"
#include "parallel/mesh.h"
#include "parallel/pipeline.h"
#include "trainer/recipe/recipe.h"
#include "trainer/run/checkpoint.h"
#include "trainer/run/finite_watch.h"
#include "trainer/run/trace.h"
#include "trainer/run/weight_average.h"

namespace ladder {

class StepGraph;

// A validation set evaluated besides the validation split (eval.sets).
struct EvalSet {
  std::string name;
  std::shared_ptr<data::TokenDataset> dataset;
  double bytes_per_token = 0;  // of the tokens evaluated (data::bytes_per_token)
};

// The run's data: data.path's training split (required), the mixture's sources (data.mixture;
// empty: the loader reads the whole training split), the validation split and the eval sets (when
// evaluating).
struct RunData {
  std::shared_ptr<data::TokenDataset> train;
  std::vector<data::MixtureSource> mixture;  // weights normalised to sum 1
  std::shared_ptr<data::TokenDataset> val;
  double val_bytes_per_token = 0;
  std::vector<EvalSet> eval_sets;
};

// The windows an evaluation of `dataset` reads: eval.tokens of it, or all it holds.
int64_t eval_windows(const Recipe& recipe, const data::TokenDataset& dataset);

// Opens what the recipe's [data] and eval.sets name, checking each source against data.path's
// tokenizer; errors name the key and the source.
RunData open_run_data(const Recipe& recipe);
std::vector<std::string> eval_set_names(const std::vector<EvalSet>& sets);

class RunContext {
 public:
  // Builds the run's parts from a validated recipe; `world` is every rank of the job (islands x
  // dp x pp x tp). Parameters are initialised (contract 3) and, when `init_from` names a
  // checkpoint, loaded where names and shapes match, before DiLoCo copies them as its global
  // model.
  ~RunContext();
  RunContext(const Recipe& recipe, const parallel::Communicator& world, RunData data,
             const std::string& init_from = "");
  RunContext(const RunContext&) = delete;
  RunContext& operator=(const RunContext&) = delete;

  // The start-up description, one line per part that is on (model, architecture, compute and
  // each parallelism), each written by the part itself.
  std::vector<std::string> describe() const;
  // The run's attributes for the trace (trainer/trace_schema.h lists them all).
  // `origin`: where the run's state began (branch_attributes, trainer/run/branch.h).
  std::map<std::string, TraceAttribute> trace_attributes(const Attributes& origin) const;

  const Recipe recipe;
  const std::string recipe_toml;  // resolved_recipe_toml(recipe): checkpoints and the trace hold it
  const parallel::Communicator& world;
  const parallel::ProcessMesh mesh;
  const torch::Device device;
  const bool bf16;               // matmuls and attention in bf16 (train.precision = "bf16")
  const bool reset_inner_state;  // DiLoCo: the inner AdamW state reset at each outer step
  RunData data;
  const int64_t vocab;
  // What the tensor- and expert-parallel layers communicate inside forward and backward; the
  // training step takes them (trainer/run/train_step.h).
  parallel::CommStats tp_stats, ep_stats;
  const parallel::TensorParallel tp;
  const parallel::ExpertParallel ep;
  const std::vector<int64_t> layers_per_stage;  // layers of every virtual stage
  std::unique_ptr<models::Model> model;
  const parallel::Pipeline pipeline;
  optim::RuleInputs rule_inputs;
  std::vector<optim::ParamSettings> settings;
  std::string rules;                  // optim::rules_table, for checkpoints and the trace
  std::vector<size_t> tied;           // a tied embedding held by both ends of the pipeline
  std::vector<torch::Tensor> values;  // every parameter this rank holds, the ParamStore's order
  std::unique_ptr<parallel::GradientReduction> grads;
  std::unique_ptr<optim::AdamW> optimizer;
  std::unique_ptr<optim::GlobalGradNorm> grad_norm;
  FiniteWatch finite_watch;          // the sync-free step's deferred finite check
  std::unique_ptr<StepGraph> graph;  // train.cuda_graph (trainer/run/step_graph.h)
  CheckpointLayout checkpoint_layout;
  std::vector<std::string> init_from_fresh;  // with init_from: the parameters it did not hold
  std::unique_ptr<parallel::DiLoCo> diloco;
  std::unique_ptr<WeightAverages> average;  // eval.average (trainer/run/weight_average.h)
  // Each DiLoCo island takes its own global_batch rows of every step's sample (contract 4: the
  // islands' batches are disjoint pieces of one reproducible order).
  data::DataLoader loader;
  const models::SizeAccounting accounting;
  const int64_t tokens_per_step;  // of all islands
  const int64_t micro;            // micro-batches per rank and step
  const int64_t step_micro;       // micro-batches in the step, all dp ranks

  models::ParamStore& params() { return model->params(); }
  // The log line of the attention kernel the run's shapes get (the fused CPU one, or the backend
  // at::scaled_dot_product_attention chooses: on a GPU flash, cuDNN or memory-efficient).
  std::string attention_line() const;
};

// The layers of every virtual stage (pp x virtual_stages of them, in order): parallel.stage_layers,
// or a split balanced over the model's costs (parallel.stage_balance).
std::vector<int64_t> layers_per_virtual_stage(const Recipe& recipe, int64_t vocab);

// The ranges of `values` a GradientReduction returns, as the optimizer's segments.
std::vector<optim::ParamSegment> param_segments(const std::vector<parallel::FlatRange>& ranges);

}  // namespace ladder
