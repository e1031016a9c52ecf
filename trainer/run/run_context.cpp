#include "trainer/run/run_context.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "core/data_source.h"
#include "core/error.h"
#include "core/format.h"
#include "core/trace_schema.h"
#include "kernels/attention.h"
#include "kernels/cuda.h"
#include "models/blocks.h"
#include "models/describe.h"
#include "trainer/run/hardware.h"
#include "trainer/run/step_graph.h"

namespace ladder {
namespace {

// This rank's chunks of the layer stack: virtual stage v = chunk * pp + stage takes the v-th run of
// layers_per_virtual_stage.
models::StageLayout stage_layout(const Recipe& r, int stage,
                                 const std::vector<int64_t>& layers_per_stage) {
  const auto& p = r.parallel;
  const int64_t stages = p.pp * p.virtual_stages;
  models::StageLayout layout;
  int64_t begin = 0;
  for (int64_t v = 0; v < stages; ++v) {
    if (v % p.pp == stage) layout.chunks.push_back({begin, begin + layers_per_stage[v]});
    begin += layers_per_stage[v];
  }
  layout.first = stage == 0;
  layout.last = stage == p.pp - 1;
  return layout;
}

parallel::DilocoOptions diloco_options(const DilocoConfig& dc) {
  return {dc.inner_steps,   dc.outer_lr, dc.outer_momentum,   dc.fragments,
          dc.overlap_steps, dc.mixing,   dc.pseudo_grad_dtype};
}

std::string mixture_attribute(const std::vector<data::MixtureSource>& mixture) {
  std::string out;
  for (const auto& m : mixture)
    out += (out.empty() ? "" : " ") + m.name + "=" + shortest_float(m.weight);
  return out;
}

// A source's split, with errors that name the recipe key and the source.
std::shared_ptr<data::TokenDataset> open_source(const DataSource& source, const std::string& split,
                                                const std::string& key,
                                                const data::DatasetMeta& reference) {
  std::shared_ptr<data::TokenDataset> dataset;
  try {
    dataset = std::make_shared<data::TokenDataset>(source.dataset, split, source.domains);
  } catch (const Error& e) {
    throw Error(key, "\"" + source.spec + "\": " + e.what());
  }
  if (dataset->meta().tokenizer_identity != reference.tokenizer_identity)
    throw Error(key, "\"" + source.spec + "\": " + source.dataset +
                         " was made with another tokenizer (" + dataset->meta().tokenizer_identity +
                         ") than data.path (" + reference.tokenizer_identity + ")");
  return dataset;
}

}  // namespace

int64_t eval_windows(const Recipe& r, const data::TokenDataset& dataset) {
  return std::min(r.eval.tokens / r.data.seq_len,
                  data::sequential_window_count(dataset, r.data.seq_len));
}

std::vector<std::string> eval_set_names(const std::vector<EvalSet>& sets) {
  std::vector<std::string> names;
  for (const auto& s : sets)
    names.push_back(s.name);
  return names;
}

RunData open_run_data(const Recipe& r) {
  RunData data;
  data.train = std::make_shared<data::TokenDataset>(r.data.path, "train");
  const data::DatasetMeta& meta = data.train->meta();
  // The weights normalised once here (the recipe checked them: >= 0, not all 0).
  const auto mixture = parse_data_sources(r.data.mixture, r.data.path);
  double sum = 0;
  for (double w : r.data.weights)
    sum += w;
  for (size_t i = 0; i < mixture.size(); ++i)
    data.mixture.push_back({mixture[i].name, open_source(mixture[i], "train", "data.mixture", meta),
                            r.data.weights.at(i) / sum});
  if (r.eval.every_steps > 0) {
    data.val = std::make_shared<data::TokenDataset>(r.data.path, "val");
    if (data::sequential_window_count(*data.val, r.data.seq_len) == 0)
      throw Error(r.data.path, "the validation split is shorter than one sequence of data.seq_len");
    const auto tokenizer = data::load_dataset_tokenizer(r.data.path, meta);
    data.val_bytes_per_token =
        data::bytes_per_token(*data.val, *tokenizer, r.data.seq_len, eval_windows(r, *data.val));
    for (const auto& set : parse_data_sources(r.eval.sets, r.data.path)) {
      EvalSet e{set.name, open_source(set, "val", "eval.sets", meta)};
      if (data::sequential_window_count(*e.dataset, r.data.seq_len) == 0)
        throw Error("eval.sets", "\"" + set.spec + "\": its validation split holds " +
                                     std::to_string(e.dataset->size()) +
                                     " tokens, shorter than one sequence of data.seq_len");
      e.bytes_per_token = data::bytes_per_token(*e.dataset, *tokenizer, r.data.seq_len,
                                                eval_windows(r, *e.dataset));
      data.eval_sets.push_back(std::move(e));
    }
  }
  return data;
}

std::vector<int64_t> layers_per_virtual_stage(const Recipe& r, int64_t vocab) {
  const auto& p = r.parallel;
  if (!p.stage_layers.empty()) return p.stage_layers;
  const models::StageCosts costs =
      models::stage_costs(r.model, vocab, r.data.seq_len, p.stage_balance);
  return parallel::partition_layers(costs.layers, costs.first, costs.last, p.pp * p.virtual_stages);
}

std::vector<optim::ParamSegment> param_segments(const std::vector<parallel::FlatRange>& ranges) {
  std::vector<optim::ParamSegment> out;
  out.reserve(ranges.size());
  for (const auto& r : ranges)
    out.push_back(optim::ParamSegment{r.tensor, r.offset, r.length});
  return out;
}

RunContext::RunContext(const Recipe& r, const parallel::Communicator& world_comm, RunData run_data,
                       const std::string& init_from)
    : recipe(r),
      recipe_toml(resolved_recipe_toml(r)),
      world(world_comm),
      mesh(
          world_comm,
          parallel::MeshShape{static_cast<int>(r.parallel.tp), static_cast<int>(r.parallel.pp),
                              static_cast<int>(r.parallel.dp), static_cast<int>(r.parallel.islands),
                              static_cast<int>(r.parallel.ep)}),
      device(train_device(r)),
      bf16(r.train.precision == Precision::Bf16),
      reset_inner_state(r.diloco.inner_state == parallel::InnerState::Reset),
      data(std::move(run_data)),
      vocab(data.train->meta().vocab_size),
      tp{&mesh.tp(), r.parallel.sequence_parallel, &tp_stats},
      ep{&mesh.ep(), &ep_stats},
      layers_per_stage(layers_per_virtual_stage(r, vocab)),
      model(models::build_model(r.model, vocab, r.data.seq_len, tp,
                                stage_layout(r, mesh.coord().pp, layers_per_stage), ep,
                                r.train.fused_kernels)),
      pipeline(mesh.pp(), r.parallel.schedule, static_cast<int>(r.parallel.virtual_stages)),
      loader(data.mixture.empty()
                 ? data::DataLoader(data.train, r.data.seq_len,
                                    r.parallel.islands * r.train.global_batch, r.run.seed)
                 : data::DataLoader(data.mixture, r.data.seq_len,
                                    r.parallel.islands * r.train.global_batch, r.run.seed)),
      accounting(model->accounting(r.data.seq_len)),
      tokens_per_step(r.parallel.islands * r.train.global_batch * r.data.seq_len),
      micro(r.parallel.microbatches),
      step_micro(r.parallel.microbatches * mesh.dp().size()) {
  // train.fused_cuda_kernels: the process's switch of kernels/cuda.h (the recipe refuses it off
  // CUDA, and in a build without the kernels).
  kernels::set_cuda_kernels(r.train.fused_cuda_kernels && device.is_cuda());
  models::ParamStore& store = model->params();
  // The parametrization's rules for every parameter (contract 1), the same on every rank.
  rule_inputs = optim::rule_inputs(r.mup, r.optim, r.model, r.train.global_batch * r.data.seq_len,
                                   r.train.steps * r.train.global_batch * r.data.seq_len);
  settings = optim::param_settings(store.all(), rule_inputs);
  rules = optim::rules_table(store.catalog(), optim::param_settings(store.catalog(), rule_inputs),
                             rule_inputs.width_multiplier);
  optim::initialize(store, settings, static_cast<uint64_t>(r.run.seed));
  std::vector<bool> split_experts;  // experts split over ep: reduced over expert_dp
  for (auto& p : store.all()) {
    split_experts.push_back(p.experts.split());
    if (r.parallel.pp > 1 && r.model.tie_embeddings && p.role == models::Role::Embedding)
      tied.push_back(values.size());
    // Initialised on the CPU (the same generator on every device), then moved: set_data keeps the
    // handles the model holds.
    if (p.value.device() != device) {
      torch::NoGradGuard no_grad;
      p.value.set_data(p.value.to(device));
    }
    values.push_back(p.value);
  }
  grads = std::make_unique<parallel::GradientReduction>(
      values, split_experts, mesh,
      parallel::DataParallelOptions{static_cast<int64_t>(r.parallel.bucket_mb * (1 << 20)),
                                    r.parallel.overlap_grad_reduce, r.optim.zero == 1, tied});
  // bf16 products on the CPU read AdamW's bf16 copies of the weights instead of casting them.
  // The sync-free update is ATen's fused kernel (which writes no bf16 copies).
  const bool fused = r.train.fused_kernels, aten = r.train.sync_free_step;
  optimizer = std::make_unique<optim::AdamW>(
      store, r.optim, settings, param_segments(grads->owned()),
      optim::AdamWKernels{fused && !aten, fused && !aten && device.is_cpu() && bf16, aten});
  grad_norm = std::make_unique<optim::GlobalGradNorm>(
      store, optimizer->segments(),
      optim::GradNormGroups{
          grads->dense().sharded_optimizer() ? &grads->dense() : nullptr,
          grads->experts() && grads->experts()->sharded_optimizer() ? grads->experts() : nullptr,
          &mesh.tp(), ep.active() ? &mesh.ep() : nullptr, &mesh.pp()});
  checkpoint_layout = CheckpointLayout{&world, param_segments(grads->shard()), mesh.coord().tp};
  if (!init_from.empty())
    init_from_fresh = load_matching_params(init_from, store, checkpoint_layout);
  // DiLoCo's global parameters start as the model's (initialised, or loaded above); a resumed
  // checkpoint then restores them with the rest of the outer state.
  if (diloco_active(r)) {
    diloco = std::make_unique<parallel::DiLoCo>(values, mesh.island(), diloco_options(r.diloco),
                                                r.train.steps);
    checkpoint_layout.diloco = diloco.get();
    checkpoint_layout.islands = static_cast<int>(r.parallel.islands);
    checkpoint_layout.island = mesh.coord().island;
  }
  if (r.eval.average != WeightAverage::None) {
    average = std::make_unique<WeightAverages>(r.eval.average, r.eval.ema_decay, store);
    checkpoint_layout.average = average.get();
  }
  if (r.train.cuda_graph) graph = std::make_unique<StepGraph>(*this);
}

RunContext::~RunContext() = default;

std::string RunContext::attention_line() const {
  const Recipe& r = recipe;
  // The shapes of one rank's causal attention over a micro-batch, in the products' type.
  const int64_t tp_size = r.parallel.tp, head_dim = r.model.d_model / r.model.n_heads;
  const auto options =
      torch::TensorOptions(bf16 ? torch::kBFloat16 : torch::kFloat32).device(device);
  const torch::Tensor q = torch::empty(
      {r.train.micro_batch, r.model.n_heads / tp_size, r.data.seq_len, head_dim}, options);
  const torch::Tensor kv = torch::empty(
      {r.train.micro_batch, r.model.n_kv_heads / tp_size, r.data.seq_len, head_dim}, options);
  const std::string shape = fmt::format("[{}, {}, {}, {}] {}", q.size(0), q.size(1), q.size(2),
                                        q.size(3), bf16 ? "bf16" : "fp32");
  if (r.train.fused_kernels && kernels::causal_attention_fusable(q, kv, kv))
    return "attention: ladder's fused CPU kernel (kernels/attention.h) for " + shape;
  const std::string backend = models::sdpa_backend(q, kv, kv);
  return "attention: at::scaled_dot_product_attention with " + backend + " for " + shape +
         (device.is_cuda() && backend.rfind("math", 0) == 0
              ? " (slow: no fused kernel serves these shapes and this type)"
              : "");
}

std::vector<std::string> RunContext::describe() const {
  const Recipe& r = recipe;
  std::vector<std::string> lines = models::describe_model(r.model, accounting, vocab);
  lines.push_back(fmt::format(
      "compute: {}, {} threads per rank, precision {}{}", device.str(), r.train.threads,
      choice_name(kPrecisionNames, r.train.precision),
      bf16 ? " (matmuls and attention in bf16; weights, gradients, AdamW in fp32)" : ""));
  if (r.train.sync_free_step || r.train.fused_cuda_kernels || r.train.cuda_graph)
    lines.push_back(fmt::format(
        "step: {}{}{}", r.train.sync_free_step ? "sync-free (reads at log steps)" : "host-checked",
        r.train.fused_cuda_kernels ? ", fused CUDA kernels" : "",
        r.train.cuda_graph
            ? fmt::format(", one CUDA graph replayed after {} eager steps", StepGraph::kWarmupSteps)
            : ""));
  lines.push_back(attention_line());
  if (!data.mixture.empty()) {
    std::string sources;
    for (const auto& m : data.mixture)
      sources += fmt::format("{}{} {:.3g} ({} tokens)", sources.empty() ? "" : ", ", m.name,
                             m.weight, human_count(static_cast<double>(m.dataset->size())));
    lines.push_back(fmt::format("data: a mixture of {} sources: {}", data.mixture.size(), sources));
  }
  if (!data.eval_sets.empty()) {
    std::string sets;
    for (const auto& e : data.eval_sets)
      sets += fmt::format("{}{} ({:.3g} bytes/token)", sets.empty() ? "" : ", ", e.name,
                          e.bytes_per_token);
    lines.push_back("eval sets: " + sets);
  }
  if (tp.active())
    lines.push_back(
        parallel::describe_tensor_parallel(tp, r.model.n_heads, r.model.n_kv_heads, vocab));
  if (r.parallel.pp > 1)
    lines.push_back(parallel::describe_pipeline(
        pipeline, r.parallel.microbatches, layers_per_stage,
        r.parallel.stage_layers.empty() ? std::optional(r.parallel.stage_balance) : std::nullopt));
  lines.push_back(grads->describe(r.parallel.microbatches, r.train.micro_batch,
                                  r.parallel.bucket_mb, r.parallel.overlap_grad_reduce));
  if (ep.active())
    lines.push_back(
        parallel::describe_expert_parallel(ep, r.model.experts(), mesh.expert_dp().size()));
  if (diloco)
    lines.push_back(parallel::describe_diloco(diloco_options(r.diloco), r.parallel.islands,
                                              world.size() / static_cast<int>(r.parallel.islands),
                                              r.train.global_batch, reset_inner_state));
  return lines;
}

std::map<std::string, TraceAttribute> RunContext::trace_attributes(const Attributes& origin) const {
  const Recipe& r = recipe;
  Attributes a = models::model_attributes(r.model, accounting, vocab);
  merge_attributes(a, optim::parametrization_attributes(rule_inputs, rules));
  merge_attributes(a, parallel::diloco_attributes(diloco_options(r.diloco), r.parallel.islands,
                                                  diloco != nullptr, reset_inner_state));
  merge_attributes(
      a, {{"seq_len", r.data.seq_len},
          {"global_batch", r.train.global_batch},
          {"batch_tokens", tokens_per_step},
          {"seed", r.run.seed},
          {"precision", std::string(choice_name(kPrecisionNames, r.train.precision))},
          {"device", std::string(choice_name(kDeviceKindNames, r.train.device))},
          {"threads", r.train.threads},
          {"total_steps", r.train.steps},
          {"lr_schedule", std::string(choice_name(optim::kLrScheduleNames, r.schedule.kind))},
          {"dp", r.parallel.dp},
          {"tp", r.parallel.tp},
          {"pp", r.parallel.pp},
          {"schedule", std::string(choice_name(parallel::kScheduleKindNames, r.parallel.schedule))},
          {"virtual_stages", r.parallel.virtual_stages},
          {"microbatches", r.parallel.microbatches},
          {"sequence_parallel", int64_t{r.parallel.sequence_parallel}},
          {"zero", r.optim.zero},
          {"weight_average", std::string(choice_name(kWeightAverageNames, r.eval.average))},
          {"ema_decay", r.eval.average == WeightAverage::Ema ? r.eval.ema_decay : 0.0},
          {"data_mixture", mixture_attribute(data.mixture)},
          {"eval_sets", join(eval_set_names(data.eval_sets), " ")},
          {"recipe", recipe_toml}});
  merge_attributes(a, origin);
  // Every attribute the schema declares is the run's to give (the trace writes format and
  // version), and the writer refuses any other: the two cannot drift apart.
  for (const auto& declared : trace_schema::attributes())
    if (declared.name != "format" && declared.name != "version" &&
        !a.count(std::string(declared.name)))
      throw std::logic_error("trace attribute " + std::string(declared.name) +
                             " is declared in core/trace_schema.h but no part of the run gives it");
  return a;
}

}  // namespace ladder
