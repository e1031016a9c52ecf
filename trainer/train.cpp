// The training loop, top to bottom: checks, data, run folder, model (this rank's pipeline stage of
// it, on the rank's device), data parallelism, optimizer, resume, then for every step: this rank's
// micro-batches through the pipeline schedule, forward (bf16 under autocast when train.precision
// says so) and backward -> tied-embedding gradient sum between the pipeline's ends -> gradient
// reduction over dp -> clip on the global norm -> learning rate -> AdamW (on this rank's ZeRO
// shard, or everything) -> parameter all-gather (ZeRO) -> log, evaluate, checkpoint -> stop here
// when a preemption signal came (trainer/preemption.h).
#include "trainer/train.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/format.h"
#include "core/log.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "models/model.h"
#include "models/moe.h"
#include "models/precision.h"
#include "optim/adamw.h"
#include "optim/parametrization.h"
#include "optim/schedule.h"
#include "parallel/data_parallel.h"
#include "parallel/diloco.h"
#include "parallel/mesh.h"
#include "parallel/pipeline.h"
#include "trainer/checkpoint.h"
#include "trainer/hardware.h"
#include "trainer/preemption.h"
#include "trainer/spectra.h"
#include "trainer/trace.h"

namespace ladder {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Whether the checkpoint after `step` completed steps is kept for law fitting.
bool is_intermediate(int64_t step, int64_t tokens_per_step, const CheckpointConfig& c) {
  const auto& rule = c.intermediate;
  if (rule.rule == "none") return false;
  if (rule.rule == "log2") return step > 0 && (step & (step - 1)) == 0;
  for (int64_t point : rule.points) {
    if (c.intermediate_unit == "steps" && point == step) return true;
    // A token count is reached by the first step whose tokens cover it.
    if (c.intermediate_unit == "tokens" && (step - 1) * tokens_per_step < point &&
        point <= step * tokens_per_step)
      return true;
  }
  return false;
}

// Keeps the newest `keep` periodic checkpoints; intermediate ones always stay.
void prune_periodic(const std::string& run_dir, int64_t tokens_per_step,
                    const CheckpointConfig& c) {
  std::vector<int64_t> periodic;
  for (int64_t s : checkpoint_steps(run_dir))
    if (!is_intermediate(s, tokens_per_step, c)) periodic.push_back(s);
  for (size_t i = 0; i + c.keep < periodic.size(); ++i) {
    fs::remove(checkpoint_path(run_dir, periodic[i]));
    spdlog::debug("removed periodic checkpoint at step {}", periodic[i]);
  }
}

// Mean loss over the first eval.tokens of the validation split, in order. The dp ranks take
// alternate micro-batches of it, each through its pipeline (forwards only), and the sum is reduced
// on the device (no host round trip per micro-batch; NCCL reduces it on CUDA).
double evaluate(models::Model& model, const parallel::Pipeline& pipeline,
                const data::TokenDataset& val, const Recipe& r, const parallel::ProcessMesh& mesh,
                torch::Device device) {
  torch::NoGradGuard no_grad;
  const models::Autocast autocast(device, r.train.precision == "bf16");
  const int64_t seq = r.data.seq_len, micro = r.train.micro_batch;
  const int64_t windows = std::min(r.eval.tokens / seq, data::sequential_window_count(val, seq));
  std::vector<int64_t> firsts;  // this dp rank's micro-batches: their first windows
  for (int64_t first = mesh.dp().rank() * micro; first < windows; first += mesh.dp().size() * micro)
    firsts.push_back(first);
  // Expert parallelism exchanges rows between dp ranks in every forward: then each rank runs as
  // many forwards as the busiest, the extra ones on the first windows, counted for nothing.
  const auto counted = static_cast<int64_t>(firsts.size());
  if (r.parallel.ep > 1)
    while (static_cast<int64_t>(firsts.size()) * mesh.dp().size() * micro < windows)
      firsts.push_back(0);
  auto rows = [&](int64_t m) { return std::min(micro, windows - firsts[m]); };
  const auto f64 = torch::TensorOptions(torch::kFloat64).device(device);
  torch::Tensor sum = torch::zeros({1}, f64);
  if (!firsts.empty()) {
    parallel::PipelineStep work;
    work.microbatches = static_cast<int64_t>(firsts.size());
    work.activation_shape = [&](int64_t m) { return model.activation_shape(rows(m), seq); };
    work.activation_options = torch::TensorOptions(torch::kFloat32).device(device);
    work.forward = [&](int chunk, int64_t m, const torch::Tensor& input) {
      const torch::Tensor batch = data::sequential_windows(val, seq, firsts[m], rows(m)).to(device);
      const auto out = model.forward_chunk(chunk, batch.slice(1, 0, seq), batch.slice(1, 1), input);
      if (!pipeline.last(chunk)) return out.activation;
      if (m < counted) sum += out.loss.loss.to(torch::kFloat64) * static_cast<double>(rows(m));
      return out.loss.loss;
    };
    pipeline.run_forward(work);
  }
  mesh.pp().all_reduce(sum);  // the last stage has it
  mesh.dp().all_reduce(sum);
  return sum.item<double>() / static_cast<double>(windows);
}

// This rank's chunks of the layer stack: virtual stage v = chunk * pp + stage takes the v-th run of
// layers of the recipe's explicit split, or of a split balanced over the model's costs.
models::StageLayout stage_layout(const Recipe& r, int64_t vocab, int stage,
                                 std::vector<int64_t>& layers_per_stage) {
  const auto& p = r.parallel;
  const int64_t stages = p.pp * p.virtual_stages;
  if (!p.stage_layers.empty()) {
    layers_per_stage = p.stage_layers;
  } else {
    const models::StageCosts costs =
        models::stage_costs(r.model, vocab, r.data.seq_len, p.stage_balance);
    layers_per_stage = parallel::partition_layers(costs.layers, costs.first, costs.last, stages);
  }
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

// A scalar summed over a group (fp64).
double sum_over(const parallel::Communicator& group, double value) {
  if (group.size() == 1) return value;
  torch::Tensor t = torch::tensor({value}, torch::kFloat64);
  group.all_reduce(t);
  return t.item<double>();
}

// The gradient reduction of every parameter this rank holds: over dp, except the experts split over
// ep, which are reduced over the dp / ep ranks that hold the same experts (the mesh's expert_dp;
// parallel/expert_parallel.h). Without expert parallelism, one reduction over dp for everything.
class GradientReduction {
 public:
  GradientReduction(const std::vector<torch::Tensor>& values,
                    const std::vector<bool>& split_experts, const parallel::ProcessMesh& mesh,
                    const parallel::DataParallelOptions& options) {
    std::vector<torch::Tensor> dense, experts;
    for (size_t k = 0; k < values.size(); ++k) {
      (split_experts[k] ? expert_index_ : dense_index_).push_back(k);
      (split_experts[k] ? experts : dense).push_back(values[k]);
    }
    parallel::DataParallelOptions dense_options = options;
    dense_options.late_tensors.clear();
    for (size_t k : options.late_tensors)
      for (size_t i = 0; i < dense_index_.size(); ++i)
        if (dense_index_[i] == k) dense_options.late_tensors.push_back(i);
    dense_ = std::make_unique<parallel::DataParallel>(dense, mesh.dp(), dense_options);
    if (!experts.empty()) {
      parallel::DataParallelOptions expert_options = options;
      expert_options.late_tensors.clear();
      experts_ =
          std::make_unique<parallel::DataParallel>(experts, mesh.expert_dp(), expert_options);
    }
  }
  parallel::DataParallel& dense() { return *dense_; }
  parallel::DataParallel* experts() { return experts_.get(); }

  void zero_grad() {
    each([](auto& d) { d.zero_grad(); });
  }
  void before_backward(bool last) {
    each([&](auto& d) { d.before_backward(last); });
  }
  void finish_grad_sync() {
    each([](auto& d) { d.finish_grad_sync(); });
  }
  void gather_params() {
    each([](auto& d) { d.gather_params(); });
  }
  // What this rank's optimizer updates, and what it writes to checkpoints, as segments of the
  // ParamStore's parameters.
  std::vector<optim::ParamSegment> owned() const {
    return segments(&parallel::DataParallel::owned);
  }
  std::vector<optim::ParamSegment> shard() const {
    return segments(&parallel::DataParallel::shard);
  }
  parallel::CommStats take_stats() {
    parallel::CommStats total;
    each([&](auto& d) {
      const parallel::CommStats s = d.take_stats();
      total.seconds += s.seconds, total.bytes += s.bytes, total.collectives += s.collectives;
    });
    return total;
  }
  int64_t bucket_count() const {
    return dense_->bucket_count() + (experts_ ? experts_->bucket_count() : 0);
  }

 private:
  template <class F>
  void each(F f) {
    f(*dense_);
    if (experts_) f(*experts_);
  }
  std::vector<optim::ParamSegment> segments(
      const std::vector<parallel::FlatRange>& (parallel::DataParallel::*ranges)() const) const {
    std::vector<optim::ParamSegment> out;
    auto add = [&](const parallel::DataParallel& d, const std::vector<size_t>& index) {
      for (const auto& r : (d.*ranges)())
        out.push_back(optim::ParamSegment{index[r.tensor], r.offset, r.length});
    };
    add(*dense_, dense_index_);
    if (experts_) add(*experts_, expert_index_);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
      return a.param != b.param ? a.param < b.param : a.offset < b.offset;
    });
    return out;
  }
  std::vector<size_t> dense_index_, expert_index_;  // positions in the ParamStore's list
  std::unique_ptr<parallel::DataParallel> dense_, experts_;
};

// `value` is the same on every rank (reduced over dp), so every rank stops here alike.
void require_finite(double value, const std::string& what, int64_t step) {
  if (!std::isfinite(value))
    throw AgreedError("train", "step " + std::to_string(step + 1) + ": " + what + " is " +
                                   std::to_string(value) +
                                   "; stopping without writing a checkpoint of this state (lower "
                                   "optim.lr, or resume from the last checkpoint)");
}

}  // namespace

int train(const Recipe& r, const TrainOptions& options, const parallel::MpiWorld& world) {
  // A preemption signal from now on stops the run after a step, with a checkpoint.
  install_preemption_handlers();
  // ----- Everything that can be refused is checked on every rank before any work. -----
  std::shared_ptr<data::TokenDataset> train_data;
  std::unique_ptr<data::TokenDataset> val_data;
  std::optional<std::string> resume_from;
  const std::string run_dir = (fs::path(r.run.out_dir) / r.run.name).string();
  const int refused = parallel::check_on_every_rank(world, [&] {
    train_data = std::make_shared<data::TokenDataset>(r.data.path, "train");
    if (r.eval.every_steps > 0) {
      val_data = std::make_unique<data::TokenDataset>(r.data.path, "val");
      if (data::sequential_window_count(*val_data, r.data.seq_len) == 0)
        throw Error(r.data.path,
                    "the validation split is shorter than one sequence of data.seq_len");
    }
    if (options.resume == "auto") {
      // Which checkpoint is sound is decided below, by all ranks together.
    } else if (!options.resume.empty()) {
      if (!fs::exists(options.resume)) throw Error(options.resume, "no such checkpoint");
      resume_from = options.resume;
    } else if (!options.init_from.empty() && !fs::exists(options.init_from)) {
      throw Error(options.init_from, "no such checkpoint (--init-from)");
    } else if (fs::exists(fs::path(run_dir) / "trace.h5")) {
      throw Error(run_dir,
                  "already holds a run; continue it with --resume auto, or choose another "
                  "run.name");
    }
  });
  if (refused) return refused;
  // Each DiLoCo island takes its own global_batch rows of every step's sample (contract 4: the
  // islands' batches are disjoint pieces of one reproducible order).
  data::DataLoader loader(train_data, r.data.seq_len, r.parallel.islands * r.train.global_batch,
                          r.run.seed);

  // ----- The process mesh and the run folder (rank 0 writes it; every rank logs into it). -----
  const parallel::Communicator world_comm = parallel::Communicator::world();
  const parallel::ProcessMesh mesh(
      world_comm,
      parallel::MeshShape{static_cast<int>(r.parallel.tp), static_cast<int>(r.parallel.pp),
                          static_cast<int>(r.parallel.dp), static_cast<int>(r.parallel.islands),
                          static_cast<int>(r.parallel.ep)});
  const bool leader = world.rank() == 0;
  if (leader) {
    fs::create_directories(run_dir);
    write_resolved_recipe(r, (fs::path(run_dir) / "recipe.toml").string());
  }
  world_comm.barrier();
  log_to_file((fs::path(run_dir) / "log.txt").string());
  // The checkpoint to resume from is verified (its checksums read by all ranks, a share each); a
  // damaged newest one gives way to the one before it (trainer/checkpoint.h).
  if (options.resume == "auto") {
    resume_from = newest_sound_checkpoint(run_dir, &world_comm);
  } else if (resume_from) {
    if (const std::string problem = agreed_checkpoint_problem(*resume_from, &world_comm);
        !problem.empty())
      throw AgreedError(*resume_from, "damaged: " + problem);
  }
  if (leader)
    if (const int removed = remove_unfinished_checkpoints(run_dir); removed > 0)
      spdlog::info(
          "removed {} unfinished checkpoint file{} (*.h5.tmp) left by an interrupted write",
          removed, removed == 1 ? "" : "s");

  // ----- Model, data parallelism, optimizer. -----
  const int64_t vocab = train_data->meta().vocab_size;
  const torch::Device device = train_device(r);
  const bool bf16 = r.train.precision == "bf16";
  parallel::CommStats tp_stats;  // the tensor-parallel layers count their collectives here
  const parallel::TensorParallel tp{&mesh.tp(), r.parallel.sequence_parallel, &tp_stats};
  parallel::CommStats ep_stats;  // the experts' all-to-alls
  const parallel::ExpertParallel ep{&mesh.ep(), &ep_stats};
  std::vector<int64_t> layers_per_stage;
  const models::StageLayout stage = stage_layout(r, vocab, mesh.coord().pp, layers_per_stage);
  auto model = models::build_model(r.model, vocab, r.data.seq_len, tp, stage, ep);
  const parallel::Pipeline pipeline(mesh.pp(), parallel::schedule_kind(r.parallel.schedule),
                                    static_cast<int>(r.parallel.virtual_stages));
  models::ParamStore& params = model->params();
  // The parametrization's rules for every parameter (contract 1), the same on every rank.
  const optim::RuleInputs rule_inputs =
      optim::rule_inputs(r.mup, r.optim, r.model, r.train.global_batch * r.data.seq_len,
                         r.train.steps * r.train.global_batch * r.data.seq_len);
  const std::vector<optim::ParamSettings> settings =
      optim::param_settings(params.all(), rule_inputs);
  const std::string rules =
      optim::rules_table(params.catalog(), optim::param_settings(params.catalog(), rule_inputs),
                         rule_inputs.width_multiplier);
  optim::initialize(params, settings, static_cast<uint64_t>(r.run.seed));
  std::vector<torch::Tensor> values;
  std::vector<bool> split_experts;  // experts split over ep: reduced over expert_dp
  std::vector<size_t> tied;         // a tied embedding held by both ends of the pipeline
  for (auto& p : params.all()) {
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
  GradientReduction dp(
      values, split_experts, mesh,
      parallel::DataParallelOptions{static_cast<int64_t>(r.parallel.bucket_mb * (1 << 20)),
                                    r.parallel.overlap_grad_reduce, r.optim.zero == 1, tied});
  optim::OptimConfig optim_config = r.optim;
  // bf16 products on the CPU read AdamW's bf16 copies of the weights instead of casting them.
  optim_config.bf16_weight_copies = optim_config.fused && device.is_cpu() && bf16;
  optim::AdamW optimizer(params, optim_config, settings, dp.owned());
  CheckpointLayout checkpoint_layout{&world_comm, dp.shard(), mesh.coord().tp};
  // The gradient norm's three parts: tensor-parallel blocks (disjoint across tp ranks, summed over
  // them), replicated tensors (the same on every tp rank, counted once) and experts split over ep
  // (disjoint across ep ranks and tp ranks); each pipeline stage adds its own, and the last stage's
  // copy of a tied embedding is not counted again.
  std::vector<optim::ParamSegment> split_segments, replicated_segments, expert_segments;
  for (const auto& s : optimizer.segments()) {
    const models::Param& p = params.all()[s.param];
    if (p.tied_copy) continue;
    (p.experts.split() ? expert_segments
     : p.shard.split() ? split_segments
                       : replicated_segments)
        .push_back(s);
  }
  const models::SizeAccounting acc = model->accounting(r.data.seq_len);
  const int64_t tokens_per_step = r.parallel.islands * r.train.global_batch * r.data.seq_len;
  spdlog::info(
      "model: {} d_model={} layers={} heads={}/{} ffn={} vocab={}: {} parameters, N={}, "
      "{} FLOPs/token",
      r.model.arch, r.model.d_model, r.model.n_layers, r.model.n_heads, r.model.n_kv_heads,
      r.model.ffn_hidden, vocab, human_count(acc.total_params),
      human_count(acc.non_embedding_params), human_count(acc.flops_per_token));
  if (r.model.moe.experts > 0) {
    const auto& e = r.model.moe;
    int64_t routed = 0;
    for (int64_t l = 0; l < r.model.n_layers; ++l)
      routed += e.routed(l) ? 1 : 0;
    spdlog::info(
        "mixture of experts: {} of {} layers routed to {} experts (top-{}, {} shared) of hidden {} "
        "(granularity {}), {} gate, {}, balance by {}: {} of {} parameters active per token",
        routed, r.model.n_layers, e.experts, e.top_k, e.shared_experts, e.expert_ffn,
        shortest_float(e.granularity), e.gate,
        e.capacity_factor > 0 ? "capacity factor " + shortest_float(e.capacity_factor)
                              : std::string("dropless"),
        e.balance, human_count(acc.active_params), human_count(acc.total_params));
  }
  if (r.model.arch == "parscale") {
    const auto& ps = r.model.parscale;
    spdlog::info(
        "parscale: {} stream{} through the shared backbone, {}-token key/value prefix per stream "
        "and "
        "attention layer{}",
        ps.streams, ps.streams == 1 ? "" : "s", ps.prefix_tokens,
        ps.streams > 1
            ? fmt::format(", aggregation smoothing {}", shortest_float(ps.aggregation_smoothing))
            : std::string());
  }
  spdlog::info("compute: {}, {} threads per rank, precision {}{}", device.str(), r.train.threads,
               r.train.precision,
               bf16 ? " (matmuls and attention in bf16; weights, gradients, AdamW in fp32)" : "");
  if (tp.active())
    spdlog::info(
        "tensor parallel: tp={}{}: attention heads {}/{} per rank, vocabulary padded to {}",
        tp.size(), tp.sequence_parallel ? ", sequence parallel" : "", r.model.n_heads / tp.size(),
        r.model.n_kv_heads / tp.size(), (vocab + tp.size() - 1) / tp.size() * tp.size());
  if (r.parallel.pp > 1) {
    std::string split;
    for (size_t v = 0; v < layers_per_stage.size(); ++v)
      split += fmt::format("{}{}", v ? " " : "", layers_per_stage[v]);
    spdlog::info(
        "pipeline parallel: pp={}, schedule {}{}, {} micro-batches per step, layers per {}"
        "stage: {}{}",
        r.parallel.pp, r.parallel.schedule,
        r.parallel.virtual_stages > 1
            ? fmt::format(" ({} virtual stages per rank)", r.parallel.virtual_stages)
            : std::string(),
        r.parallel.microbatches, r.parallel.virtual_stages > 1 ? "virtual " : "", split,
        r.parallel.stage_layers.empty() ? " (balanced by " + r.parallel.stage_balance + ")"
                                        : std::string(" (parallel.stage_layers)"));
  }
  spdlog::info(
      "data parallel: dp={}, micro-batches of {} x {} sequences per rank and step, {} gradient "
      "buckets of "
      "<= {} MiB{}{}",
      mesh.dp().size(), r.parallel.microbatches, r.train.micro_batch, dp.bucket_count(),
      r.parallel.bucket_mb, r.parallel.overlap_grad_reduce ? ", overlapped with backward" : "",
      dp.dense().sharded_optimizer() ? ", ZeRO-1 (optimizer state sharded)" : "");
  if (ep.active())
    spdlog::info(
        "expert parallel: ep={}: {} of {} experts per rank, their gradients reduced over {} "
        "rank{}",
        ep.size(), r.model.moe.experts / ep.size(), r.model.moe.experts, mesh.expert_dp().size(),
        mesh.expert_dp().size() == 1 ? "" : "s");
  const DilocoConfig& dc = r.diloco;
  if (diloco_active(r))
    spdlog::info(
        "DiLoCo: {} island{} of {} ranks, each on its own {} sequences per step; outer step every "
        "{} inner steps: pseudo-gradients in {}, Nesterov SGD lr {} momentum {}, inner AdamW state "
        "{}{}",
        r.parallel.islands, r.parallel.islands == 1 ? "" : "s",
        world_comm.size() / r.parallel.islands, r.train.global_batch, dc.inner_steps,
        dc.pseudo_grad_dtype, shortest_float(dc.outer_lr), shortest_float(dc.outer_momentum),
        dc.inner_state == "keep" ? "kept" : "reset",
        dc.fragments > 1
            ? fmt::format("; streaming: {} fragments on staggered steps, exchanges overlapping {} "
                          "inner step{} (mixing {})",
                          dc.fragments, dc.overlap_steps, dc.overlap_steps == 1 ? "" : "s",
                          shortest_float(dc.mixing))
        : dc.overlap_steps > 0
            ? fmt::format("; exchanges overlapping {} inner step{} (mixing {})", dc.overlap_steps,
                          dc.overlap_steps == 1 ? "" : "s", shortest_float(dc.mixing))
            : std::string());

  int64_t start_step = 0;
  if (!options.init_from.empty() && !resume_from) {
    const std::vector<std::string> fresh =
        load_matching_params(options.init_from, params, checkpoint_layout);
    std::string list;
    for (const auto& name : fresh)
      list += (list.empty() ? "" : ", ") + name;
    spdlog::info("initialised from {}: {} parameters loaded, {} new{}{}", options.init_from,
                 params.catalog().size() - fresh.size(), fresh.size(), fresh.empty() ? "" : ": ",
                 list);
  }
  // DiLoCo's global parameters start as the model's (initialised, or loaded above); a resumed
  // checkpoint then restores them with the rest of the outer state.
  std::unique_ptr<parallel::DiLoCo> diloco;
  if (diloco_active(r)) {
    std::vector<torch::Tensor> tensors;
    for (const auto& p : params.all())
      tensors.push_back(p.value);
    diloco = std::make_unique<parallel::DiLoCo>(
        tensors, mesh.island(),
        parallel::DilocoOptions{dc.inner_steps, dc.outer_lr, dc.outer_momentum, dc.fragments,
                                dc.overlap_steps, dc.mixing,
                                parallel::pseudo_grad_dtype(dc.pseudo_grad_dtype)},
        r.train.steps);
    checkpoint_layout.diloco = diloco.get();
    checkpoint_layout.islands = static_cast<int>(r.parallel.islands);
    checkpoint_layout.island = mesh.coord().island;
  }
  if (resume_from) {
    const CheckpointMeta meta = read_checkpoint(*resume_from, params, optimizer, checkpoint_layout);
    check_same_rules(*resume_from, meta.rules, rules);
    start_step = meta.step;
    spdlog::info("resumed from {} at step {} ({} tokens)", *resume_from, meta.step, meta.tokens);
  } else if (options.resume == "auto") {
    spdlog::info("no checkpoint in {}; starting fresh", run_dir);
  }
  if (start_step >= r.train.steps) {
    spdlog::info("the run is already complete at step {}", start_step);
    return 0;
  }

  const std::string recipe_text = resolved_recipe_toml(r);
  std::optional<Trace> trace;
  if (leader)
    trace.emplace((fs::path(run_dir) / "trace.h5").string(),
                  std::map<std::string, TraceAttribute>{
                      {"arch", r.model.arch},
                      {"N", acc.non_embedding_params},
                      {"total_params", acc.total_params},
                      {"active_params", acc.active_params},
                      {"embedding_params", acc.embedding_params},
                      {"flops_per_token", acc.flops_per_token},
                      {"width", acc.width},
                      {"depth", acc.depth},
                      {"n_heads", r.model.n_heads},
                      {"streams", r.model.parscale.streams},
                      {"P", r.model.parscale.streams},
                      {"prefix_tokens", r.model.parscale.prefix_tokens},
                      {"aggregation_smoothing", r.model.parscale.aggregation_smoothing},
                      {"experts", r.model.moe.experts},
                      {"top_k", r.model.moe.top_k},
                      {"granularity", r.model.moe.experts > 0 ? r.model.moe.granularity : 0.0},
                      {"shared_experts", r.model.moe.shared_experts},
                      {"expert_ffn", r.model.moe.expert_ffn},
                      {"active_N", acc.active_non_embedding_params},
                      {"pattern", r.model.hybrid.pattern},
                      {"ssm_state", r.model.hybrid.ssm_state},
                      {"ssm_head_dim", r.model.hybrid.ssm_head_dim},
                      {"ssm_chunk", r.model.hybrid.chunk},
                      {"ssm_expand", r.model.hybrid.expand},
                      {"conv_kernel", r.model.hybrid.conv_kernel},
                      {"attention_window", r.model.hybrid.window},
                      {"vocab_size", vocab},
                      {"seq_len", r.data.seq_len},
                      {"global_batch", r.train.global_batch},
                      {"batch_tokens", tokens_per_step},
                      {"lr", r.optim.lr},
                      {"weight_decay", r.optim.weight_decay},
                      {"seed", r.run.seed},
                      {"parametrization", r.mup.parametrization},
                      {"base_width", r.mup.base_width},
                      {"base_depth", r.mup.base_depth},
                      {"width_multiplier", rule_inputs.width_multiplier},
                      {"depth_multiplier", rule_inputs.depth_multiplier},
                      {"depth_alpha", r.mup.depth_alpha},
                      {"output_multiplier", r.mup.output_multiplier},
                      {"attention_multiplier", r.mup.attention_multiplier},
                      {"wd_rule", r.mup.wd_rule},
                      {"rules", rules},
                      {"precision", r.train.precision},
                      {"device", r.train.device},
                      {"threads", r.train.threads},
                      {"total_steps", r.train.steps},
                      {"dp", r.parallel.dp},
                      {"tp", r.parallel.tp},
                      {"pp", r.parallel.pp},
                      {"schedule", r.parallel.schedule},
                      {"virtual_stages", r.parallel.virtual_stages},
                      {"microbatches", r.parallel.microbatches},
                      {"sequence_parallel", int64_t{r.parallel.sequence_parallel}},
                      {"zero", r.optim.zero},
                      {"islands", r.parallel.islands},
                      {"diloco", int64_t{diloco_active(r)}},
                      {"diloco_inner_steps", dc.inner_steps},
                      {"diloco_outer_lr", dc.outer_lr},
                      {"diloco_outer_momentum", dc.outer_momentum},
                      {"diloco_fragments", dc.fragments},
                      {"diloco_overlap_steps", dc.overlap_steps},
                      {"diloco_mixing", dc.mixing},
                      {"diloco_pseudo_grad_dtype", dc.pseudo_grad_dtype},
                      {"diloco_inner_state", dc.inner_state},
                      {"recipe", recipe_text}},
                  resume_from ? start_step : -1, static_cast<int>(r.parallel.pp),
                  spectra_names(params));

  // MFU is stated against the sum of the ranks' peaks, measured at once (they share the machine)
  // in the precision the matmuls run in: a 1024^3 product on the CPU, 8192^3 on a GPU.
  const torch::ScalarType matmul_dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
  const double rank_peak =
      r.train.peak_gflops > 0
          ? r.train.peak_gflops
          : measure_matmul_gflops(device.is_cuda() ? 8192 : 1024, matmul_dtype, device);
  torch::Tensor peaks = torch::tensor({rank_peak}, torch::kFloat64);
  world_comm.all_reduce(peaks);  // every rank of the job computes
  const double peak_gflops = peaks.item<double>();
  dp.take_stats();
  ep_stats = parallel::CommStats{};
  if (diloco) diloco->take_stats();
  spdlog::info("MFU is stated against {:.1f} GFLOP/s ({} x {})", peak_gflops, world_comm.size(),
               r.train.peak_gflops > 0
                   ? "train.peak_gflops"
                   : "measured " + std::string(bf16 ? "bf16" : "fp32") + " matmul");

  // Every hidden matrix's top singular value (trainer/spectra.h), at the start and as the run goes.
  const bool spectra_contributor = mesh.coord().tp == 0 && mesh.coord().dp == 0;
  auto record_spectra = [&](int64_t step) {
    const std::vector<double> sigma =
        top_singular_values(params, mesh.tp(), world_comm, spectra_contributor);
    tp_stats = parallel::CommStats{};
    if (trace) trace->append_spectra(step, sigma);
  };
  if (r.eval.spectra_every_steps > 0 && start_step == 0) record_spectra(0);

  // ----- The loop. -----
  const int64_t micro = r.parallel.microbatches;
  const int64_t step_micro = micro * mesh.dp().size();  // micro-batches in the step, all ranks
  const int64_t seq = r.data.seq_len;
  const auto loop_start = Clock::now();
  double interval_busy = 0;  // seconds of training (not eval or checkpoint) since the last log
  int64_t interval_tokens = 0, interval_steps = 0;
  parallel::CommStats interval_comm;
  parallel::PipelineStats interval_pipeline;    // summed, and the peak's maximum
  tp_stats = ep_stats = parallel::CommStats{};  // drop the start-up's
  model->set_objective_scale(1.0 / static_cast<double>(step_micro));
  model->take_routing_counts();    // drop anything counted before the loop
  torch::Tensor interval_routing;  // routed layers' counters since the last log (models/moe.h)
  const int64_t island_first_row = mesh.coord().island * r.train.global_batch;
  parallel::CommStats interval_island;  // DiLoCo's exchanges (and the seconds of its outer steps)
  int64_t interval_outer = 0;           // outer updates in the interval
  for (int64_t step = start_step; step < r.train.steps; ++step) {
    const auto step_start = Clock::now();
    dp.zero_grad();

    // Forward and backward over this rank's micro-batches, in the order of the pipeline schedule
    // (one process: each forward then its backward). Each loss is scaled by 1/step_micro, so the
    // gradients summed over the ranks are the global batch's mean. In bf16 the weights are cast
    // once per step (the cache lives until the block ends, before the update).
    torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device));
    parallel::PipelineStep work;
    work.microbatches = micro;
    work.activation_shape = [&](int64_t) {
      return model->activation_shape(r.train.micro_batch, seq);
    };
    work.activation_options = torch::TensorOptions(torch::kFloat32).device(device);
    work.forward = [&](int chunk, int64_t m, const torch::Tensor& input) {
      const int64_t first_row =
          island_first_row + (mesh.coord().dp * micro + m) * r.train.micro_batch;
      const torch::Tensor batch = loader.rows(step, first_row, r.train.micro_batch).to(device);
      const models::Autocast autocast(device, bf16);
      const models::ChunkOutput out =
          model->forward_chunk(chunk, batch.slice(1, 0, seq), batch.slice(1, 1), input);
      if (!pipeline.last(chunk)) return out.activation;
      loss_sum += out.loss.loss.detach().to(torch::kFloat64);
      return out.loss.objective / static_cast<double>(step_micro);
    };
    work.before_backward = [&](bool last) { dp.before_backward(last); };
    parallel::PipelineStats pipeline_stats;
    {
      const models::WeightCastCache weight_casts;
      pipeline_stats = pipeline.run(work);
    }
    // A tied embedding: the first stage's gradient (from the lookup) and the last stage's (from the
    // readout) are summed between the two, so both copies take the same update.
    for (size_t k : tied)
      mesh.pipeline_ends().all_reduce(values[k].mutable_grad());
    dp.finish_grad_sync();
    double loss = dp.dense().sum(sum_over(mesh.pp(), loss_sum.item<double>())) /
                  static_cast<double>(step_micro);
    // The true global norm: under ZeRO-1 each rank holds the reduced gradient of its shard only;
    // tensor-parallel blocks are summed over tp, replicated tensors counted once, stages summed.
    double split_square = optim::grad_square_sum(params, split_segments);
    double replicated_square = optim::grad_square_sum(params, replicated_segments);
    double expert_square = optim::grad_square_sum(params, expert_segments);
    if (dp.dense().sharded_optimizer())
      split_square = dp.dense().sum(split_square),
      replicated_square = dp.dense().sum(replicated_square);
    if (dp.experts() && dp.experts()->sharded_optimizer())
      expert_square = dp.experts()->sum(expert_square);
    if (ep.active()) expert_square = sum_over(mesh.ep(), sum_over(mesh.tp(), expert_square));
    const double grad_norm = std::sqrt(
        sum_over(mesh.pp(), sum_over(mesh.tp(), split_square) + replicated_square + expert_square));
    // Islands clip on their own norm; what is logged, and checked so that every rank stops alike,
    // is the mean over the islands.
    double shown_grad_norm = grad_norm;
    if (diloco) {
      torch::Tensor both = torch::tensor({loss, grad_norm}, torch::kFloat64);
      diloco->agree(both);
      loss = both[0].item<double>() / static_cast<double>(r.parallel.islands);
      shown_grad_norm = both[1].item<double>() / static_cast<double>(r.parallel.islands);
    }
    require_finite(loss, "the training loss", step);
    require_finite(shown_grad_norm, "the gradient norm", step);
    optim::clip_grads(params, optimizer.segments(), grad_norm, r.optim.grad_clip);
    const double lr = optim::lr_at(step, r.train.steps, r.optim.lr, r.schedule);
    optimizer.step(lr);
    dp.gather_params();
    // Routed layers: the step's counts over every rank that routes different tokens (each tp rank
    // routes the same ones), then the auxiliary-loss-free bias rule, the same on every rank.
    if (torch::Tensor routing = model->take_routing_counts(); routing.defined()) {
      mesh.pp().all_reduce(routing);
      mesh.dp().all_reduce(routing);
      model->balance_experts(routing);
      interval_routing = interval_routing.defined() ? interval_routing + routing : routing;
    }
    const int64_t done = step + 1;
    // DiLoCo: the fragments due exchange pseudo-gradients and take the outer step.
    if (diloco) {
      const int64_t outer_before = diloco->outer_updates();
      if (diloco->after_inner_step(done) && dc.inner_state == "reset") optimizer.reset_state();
      interval_outer += diloco->outer_updates() - outer_before;
      const parallel::CommStats s = diloco->take_stats();
      interval_island.seconds += s.seconds, interval_island.bytes += s.bytes;
    }

    const int64_t tokens = done * tokens_per_step;
    interval_busy += seconds_between(step_start, Clock::now());
    interval_tokens += tokens_per_step;
    ++interval_steps;
    const parallel::CommStats comm = dp.take_stats();
    interval_comm.seconds += comm.seconds, interval_comm.bytes += comm.bytes;
    interval_pipeline.seconds += pipeline_stats.seconds;
    interval_pipeline.idle_seconds += pipeline_stats.idle_seconds;
    interval_pipeline.p2p_bytes += pipeline_stats.p2p_bytes;
    interval_pipeline.peak_activation_bytes =
        std::max(interval_pipeline.peak_activation_bytes, pipeline_stats.peak_activation_bytes);

    if (done % r.train.log_every == 0 || done == r.train.steps) {
      const double tokens_per_s = static_cast<double>(interval_tokens) / interval_busy;
      const double mfu = acc.flops_per_token * tokens_per_s / (peak_gflops * 1e9);
      const double elapsed = seconds_between(loop_start, Clock::now());
      const double eta = elapsed / static_cast<double>(done - start_step) *
                         static_cast<double>(r.train.steps - done);
      const double n = static_cast<double>(interval_steps);
      const double step_s = interval_busy / n, comm_s = interval_comm.seconds / n;
      const double comm_bytes = static_cast<double>(interval_comm.bytes) / n;
      const double tp_comm_s = tp_stats.seconds / n;
      const double tp_comm_bytes = static_cast<double>(tp_stats.bytes) / n;
      // Every stage's bubble (idle share of its schedule) and activation peak, gathered over pp.
      torch::Tensor mine = torch::tensor(
          {interval_pipeline.bubble(), static_cast<double>(interval_pipeline.peak_activation_bytes),
           static_cast<double>(interval_pipeline.p2p_bytes) / n},
          torch::kFloat64);
      const torch::Tensor stages = mesh.pp().all_gather(mine).view({-1, 3});
      std::vector<double> stage_bubble, stage_activation_bytes;
      double pp_bytes = 0;
      std::string per_stage;
      for (int64_t i = 0; i < stages.size(0); ++i) {
        stage_bubble.push_back(stages[i][0].item<double>());
        stage_activation_bytes.push_back(stages[i][1].item<double>());
        pp_bytes = std::max(pp_bytes, stages[i][2].item<double>());
        per_stage += fmt::format("{}{:.0f}%/{}B", i ? " " : "", 100 * stage_bubble.back(),
                                 human_count(stage_activation_bytes.back()));
      }
      spdlog::info(
          "step {}/{} | tokens {} | loss {:.4f} | lr {:.2e} | grad {:.3f} | {} tok/s | "
          "MFU {:.1f}% | step {:.0f} ms = compute {:.0f} + comm {:.0f} ({}B){}{} | elapsed {} | "
          "ETA {}",
          done, r.train.steps, human_count(tokens), loss, lr, shown_grad_norm,
          human_count(tokens_per_s), 100 * mfu, 1e3 * step_s, 1e3 * (step_s - comm_s), 1e3 * comm_s,
          human_count(comm_bytes),
          tp.active() ? fmt::format(" | tp comm {:.0f} ms ({}B) inside compute", 1e3 * tp_comm_s,
                                    human_count(tp_comm_bytes))
                      : std::string(),
          r.parallel.pp > 1 ? fmt::format(" | pp bubble/activations per stage {} ({}B p2p)",
                                          per_stage, human_count(pp_bytes))
                            : std::string(),
          format_duration(elapsed), format_duration(eta));
      TrainRecord record{done,
                         tokens,
                         acc.flops_per_token * tokens,
                         loss,
                         lr,
                         shown_grad_norm,
                         tokens_per_s,
                         mfu,
                         elapsed,
                         step_s,
                         step_s - comm_s,
                         comm_s,
                         comm_bytes,
                         tp_comm_s,
                         tp_comm_bytes,
                         pp_bytes,
                         stage_bubble,
                         stage_activation_bytes};
      if (interval_routing.defined()) {
        const models::RoutingSummary moe = models::summarize_routing(interval_routing);
        spdlog::info(
            "experts step {} | aux loss {:.4f} | router z-loss {:.3f} | load max/mean {:.2f} | "
            "load cv {:.3f} | dropped {:.2f}%",
            done, moe.aux_loss, moe.z_loss, moe.load_max_over_mean, moe.load_cv,
            100 * moe.dropped_fraction);
        record.moe_aux_loss = moe.aux_loss, record.moe_z_loss = moe.z_loss;
        record.moe_load_max_over_mean = moe.load_max_over_mean, record.moe_load_cv = moe.load_cv;
        record.moe_dropped_fraction = moe.dropped_fraction;
        interval_routing = torch::Tensor();
      }
      if (ep.active()) {
        record.ep_comm_s = ep_stats.seconds / n;
        record.ep_comm_bytes = static_cast<double>(ep_stats.bytes) / n;
        spdlog::info("expert parallel step {} | all-to-all {:.0f} ms ({}B) per step inside compute",
                     done, 1e3 * record.ep_comm_s, human_count(record.ep_comm_bytes));
      }
      if (diloco) {
        // Per token of all islands: what this rank sent to the other islands, against an
        // all-reduce of its gradients over them every step (data parallelism on the same ranks).
        const double interval_tokens_d = static_cast<double>(interval_tokens);
        record.diloco_bytes_per_token =
            static_cast<double>(interval_island.bytes) / interval_tokens_d;
        record.diloco_dp_bytes_per_token =
            diloco->data_parallel_bytes_per_step() / static_cast<double>(tokens_per_step);
        if (interval_outer > 0)
          record.diloco_outer_s = interval_island.seconds / static_cast<double>(interval_outer);
        spdlog::info(
            "diloco step {} | {} {}{} since the last line | across islands {}B per token{} | outer "
            "step {}",
            done, interval_outer, dc.fragments > 1 ? "fragment update" : "outer step",
            interval_outer == 1 ? "" : "s", human_count(record.diloco_bytes_per_token),
            record.diloco_dp_bytes_per_token > 0
                ? fmt::format(" (data parallel: {}B, ratio {:.4f})",
                              human_count(record.diloco_dp_bytes_per_token),
                              record.diloco_bytes_per_token / record.diloco_dp_bytes_per_token)
                : std::string(),
            interval_outer > 0 ? fmt::format("{:.0f} ms", 1e3 * record.diloco_outer_s)
                               : std::string("none"));
        interval_island = parallel::CommStats{};
        interval_outer = 0;
      }
      if (trace) trace->append(record);
      interval_busy = 0, interval_tokens = 0, interval_steps = 0;
      interval_comm = parallel::CommStats{};
      interval_pipeline = parallel::PipelineStats{};
      tp_stats = ep_stats = parallel::CommStats{};
    }
    if (val_data && (done % r.eval.every_steps == 0 || done == r.train.steps)) {
      // DiLoCo evaluates the global model: the one the islands agree on (and checkpoints hold).
      if (diloco) diloco->swap_global();
      const double val_loss = evaluate(*model, pipeline, *val_data, r, mesh, device);
      if (diloco) diloco->swap_global();
      tp_stats = ep_stats = parallel::CommStats{};  // the evaluation's own
      require_finite(val_loss, "the validation loss", step);
      spdlog::info("eval step {} | tokens {} | val loss {:.4f}", done, human_count(tokens),
                   val_loss);
      if (trace) trace->append(EvalRecord{done, tokens, acc.flops_per_token * tokens, val_loss});
    }
    if (r.eval.spectra_every_steps > 0 &&
        (done % r.eval.spectra_every_steps == 0 || done == r.train.steps))
      record_spectra(done);
    // A preemption signal on any rank stops every rank here, after a checkpoint of this step.
    const int signal = preemption_signal();
    const bool stop = world.count_failures(signal != 0) > 0;
    const bool intermediate = is_intermediate(done, tokens_per_step, r.checkpoint);
    const bool periodic = r.checkpoint.every_steps > 0 && done % r.checkpoint.every_steps == 0;
    if (intermediate || periodic || stop || done == r.train.steps) {
      const std::string path = checkpoint_path(run_dir, done);
      write_checkpoint(
          path, params, optimizer,
          CheckpointMeta{done, tokens, lr, static_cast<uint64_t>(r.run.seed), intermediate,
                         recipe_text, r.model.arch, r.train.precision, acc, rules},
          checkpoint_layout);
      if (trace) {
        trace->append_checkpoint(done, tokens, intermediate);
        trace->back_up();  // what a resume from this checkpoint keeps, safe from a torn append
        prune_periodic(run_dir, tokens_per_step, r.checkpoint);
      }
      spdlog::info("checkpoint {}{}", path, intermediate ? " (intermediate)" : "");
    }
    if (stop && done < r.train.steps) {
      spdlog::info(
          "stopped by {} after step {}/{} with its checkpoint; continue with `ladder train {} "
          "--resume auto` (exit status {})",
          signal ? signal_name(signal) : "a preemption signal on another rank", done, r.train.steps,
          options.recipe_path.empty() ? "RECIPE" : options.recipe_path, kExitStoppedBySignal);
      return kExitStoppedBySignal;
    }
  }
  spdlog::info("done: {} steps, {} tokens in {}", r.train.steps,
               human_count(static_cast<double>(r.train.steps * tokens_per_step)),
               format_duration(seconds_between(loop_start, Clock::now())));
  return 0;
}

}  // namespace ladder
