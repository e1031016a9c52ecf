// `ladder train`, top to bottom: check everything that can be refused (on every rank, before any
// work), open the run folder, build the run (trainer/run/run_context.h), log what it is, restore a
// checkpoint (the run's own, or its parent's for a branch: trainer/run/branch.h), open the trace;
// then for every step: the training step (trainer/run/train_step.h), its metrics
// (trainer/run/interval_metrics.h), and what the cadence (trainer/run/cadence.h) says is due: a log
// line, evaluation, spectra, a checkpoint; then stop here when a preemption signal came
// (trainer/run/preemption.h).
#include "trainer/run/train.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "core/error.h"
#include "core/files.h"
#include "core/format.h"
#include "core/log.h"
#include "trainer/run/branch.h"
#include "trainer/run/cadence.h"
#include "trainer/run/hardware.h"
#include "trainer/run/interval_metrics.h"
#include "trainer/run/memory_estimate.h"
#include "trainer/run/preemption.h"
#include "trainer/run/run_context.h"
#include "trainer/run/spectra.h"
#include "trainer/run/train_step.h"

namespace ladder {
namespace fs = std::filesystem;
namespace {

// Everything a run can refuse before any work: the data, a model that cannot fit in memory
// (trainer/run/memory_estimate.h), the checkpoint to resume or start from, a branch that is not
// a run of its length (trainer/run/branch.h), and a run folder that is a file or already holds
// another run. Returns the splits; `resume_from` is set for an explicit --resume PATH, `branch`
// for a branch (given now, or recorded in the run folder when it started).
RunData check_inputs(const Recipe& r, const TrainOptions& options, const std::string& run_dir,
                     const parallel::MpiWorld& world, std::optional<std::string>& resume_from,
                     std::optional<Branch>& branch) {
  RunData data = open_run_data(r);
  check_memory_fits(estimate_memory(r, data.train->meta().vocab_size), memory_per_rank(r, world));
  if (options.resume == "auto") {
    // Which checkpoint is sound is decided later, by all ranks together.
  } else if (!options.resume.empty()) {
    if (!fs::exists(options.resume)) throw Error(options.resume, "no such checkpoint");
    resume_from = options.resume;
  } else if (!options.init_from.empty() && !fs::exists(options.init_from)) {
    throw Error(options.init_from, "no such checkpoint (--init-from)");
  }
  check_output_folder(run_dir);
  const std::optional<Branch> recorded = read_branch_record(run_dir);
  if (!options.branch_from.empty()) {
    if (recorded && recorded->checkpoint != options.branch_from)
      throw Error("--branch-from " + options.branch_from,
                  run_dir + " is a branch of " + recorded->checkpoint + " already");
    branch = check_branch(r, options.branch_from);
  } else if (recorded && !options.resume.empty()) {
    // A branch continued: its recipe is checked again while its parent's checkpoint is there.
    branch = fs::exists(recorded->checkpoint) ? check_branch(r, recorded->checkpoint) : *recorded;
  }
  if (options.resume.empty() && fs::exists(fs::path(run_dir) / "trace.h5")) {
    throw Error(run_dir,
                "already holds a run; continue it with --resume auto, or choose another run.name");
  }
  return data;
}

// The checkpoint to resume from, verified (its checksums read by all ranks, a share each); a
// damaged newest one gives way to the one before it (trainer/run/checkpoint.h). Removes what an
// interrupted write left.
std::optional<std::string> checkpoint_to_resume(const TrainOptions& options,
                                                const std::string& run_dir,
                                                std::optional<std::string> resume_from,
                                                const parallel::Communicator& world) {
  if (options.resume == "auto") {
    resume_from = newest_sound_checkpoint(run_dir, &world);
  } else if (resume_from) {
    if (const std::string problem = agreed_checkpoint_problem(*resume_from, &world);
        !problem.empty())
      throw AgreedError(*resume_from, "damaged: " + problem);
  }
  if (world.rank() == 0)
    if (const int removed = remove_unfinished_checkpoints(run_dir); removed > 0)
      spdlog::info(
          "removed {} unfinished checkpoint file{} (*.h5.tmp) left by an interrupted write",
          removed, removed == 1 ? "" : "s");
  return resume_from;
}

void log_initialised_from(const std::string& path, const RunContext& run) {
  std::string list;
  for (const auto& name : run.init_from_fresh)
    list += (list.empty() ? "" : ", ") + name;
  spdlog::info("initialised from {}: {} parameters loaded, {} new{}{}", path,
               run.model->params().catalog().size() - run.init_from_fresh.size(),
               run.init_from_fresh.size(), run.init_from_fresh.empty() ? "" : ": ", list);
}

// The checkpoint the run's state comes from: the run's own (a resume), else the parent's (a
// branch starting), verified like a resume's; nullopt for a fresh start.
std::optional<std::string> checkpoint_to_start_from(const std::optional<std::string>& resume_from,
                                                    const std::optional<Branch>& branch,
                                                    const parallel::Communicator& world) {
  if (resume_from || !branch) return resume_from;
  if (const std::string problem = agreed_checkpoint_problem(branch->checkpoint, &world);
      !problem.empty())
    throw AgreedError("--branch-from " + branch->checkpoint, "damaged: " + problem);
  return branch->checkpoint;
}

void write_checkpoint_of(RunContext& run, const std::string& path, int64_t done, double lr,
                         bool intermediate) {
  const Recipe& r = run.recipe;
  write_checkpoint(
      path, run.params(), *run.optimizer,
      CheckpointMeta{done, done * run.tokens_per_step, lr, static_cast<uint64_t>(r.run.seed),
                     intermediate, run.recipe_toml, choice_name(models::kArchNames, r.model.arch),
                     choice_name(kPrecisionNames, r.train.precision), run.accounting, run.rules},
      run.checkpoint_layout);
}

// LADDER_SYNC_DEBUG=1 on a GPU run: the training steps (not the reads between them, nor the first
// steps, which fill caches) run under a SyncDebugScope (trainer/run/hardware.h).
constexpr int64_t kSyncDebugFromStep = 3;  // steps after the start that may still wait

bool sync_debug_requested(const RunContext& run) {
  const char* v = std::getenv("LADDER_SYNC_DEBUG");
  return run.device.is_cuda() && v && std::string(v) == "1";
}

}  // namespace

int train(const Recipe& r, const TrainOptions& options, const parallel::MpiWorld& world) {
  install_preemption_handlers();  // a signal from now on stops the run after a step
  const std::string run_dir = (fs::path(r.run.out_dir) / r.run.name).string();
  std::optional<std::string> resume_from;
  std::optional<Branch> branch;
  RunData data;
  if (const int refused = parallel::check_on_every_rank(
          world, [&] { data = check_inputs(r, options, run_dir, world, resume_from, branch); }))
    return refused;

  // The run folder: rank 0 writes it, every rank logs into it.
  const parallel::Communicator world_comm = parallel::Communicator::world();
  const bool leader = world.rank() == 0;
  if (leader) {
    fs::create_directories(run_dir);
    write_resolved_recipe(r, (fs::path(run_dir) / "recipe.toml").string());
    if (branch) write_branch_record(*branch, run_dir);
  }
  world_comm.barrier();
  log_to_file((fs::path(run_dir) / "log.txt").string());
  resume_from = checkpoint_to_resume(options, run_dir, resume_from, world_comm);
  const std::optional<std::string> start_from =
      checkpoint_to_start_from(resume_from, branch, world_comm);

  const std::string init_from = start_from ? std::string() : options.init_from;
  RunContext run(r, world_comm, std::move(data), init_from);
  for (const std::string& line : run.describe())
    spdlog::info("{}", line);
  if (!init_from.empty()) log_initialised_from(init_from, run);
  int64_t start_step = 0;
  if (start_from) {
    const CheckpointMeta meta =
        read_checkpoint(*start_from, run.params(), *run.optimizer, run.checkpoint_layout);
    check_same_rules(*start_from, meta.rules, run.rules);
    start_step = meta.step;
    spdlog::info("{} {} at step {} ({} tokens)", resume_from ? "resumed from" : "branched from",
                 *start_from, meta.step, meta.tokens);
  } else if (options.resume == "auto") {
    spdlog::info("no checkpoint in {}; starting fresh", run_dir);
  }
  if (start_step >= r.train.steps) {
    spdlog::info("the run is already complete at step {}", start_step);
    return 0;
  }
  std::optional<Trace> trace;
  if (leader)
    trace.emplace((fs::path(run_dir) / "trace.h5").string(),
                  run.trace_attributes(branch_attributes(branch)), start_from ? start_step : -1,
                  static_cast<int>(r.parallel.pp), spectra_names(run.params()),
                  eval_set_names(run.data.eval_sets));
  const MfuPeak peak = mfu_peak(r, run.vocab, world_comm);
  spdlog::info("MFU is stated against {:.1f} GFLOP/s ({})", peak.gflops, peak.source);

  // Every hidden matrix's top singular value (trainer/run/spectra.h), at the start and as the run
  // goes.
  const bool spectra_contributor = run.mesh.coord().tp == 0 && run.mesh.coord().dp == 0;
  auto record_spectra = [&](int64_t done) {
    const std::vector<double> sigma =
        top_singular_values(run.params(), run.mesh.tp(), world_comm, spectra_contributor);
    if (trace) trace->append_spectra(done, sigma);
  };
  const Cadence cadence(r);
  if (r.eval.spectra_every_steps > 0 && start_step == 0) record_spectra(0);

  // ----- The loop. -----
  run.model->set_objective_scale(1.0 / static_cast<double>(run.step_micro));
  run.model->take_routing_counts();  // drop what the start-up counted
  run.grads->take_stats();
  if (run.diloco) run.diloco->take_stats();
  IntervalMetrics metrics(run, peak.gflops, start_step);
  const auto loop_start = std::chrono::steady_clock::now();
  const bool sync_debug = sync_debug_requested(run);
  if (sync_debug)
    spdlog::info("LADDER_SYNC_DEBUG=1: steps from {} on fail if they wait for a GPU",
                 start_step + kSyncDebugFromStep + 1);
  for (int64_t step = start_step; step < r.train.steps; ++step) {
    const StepResult result = [&] {
      const SyncDebugScope scope(sync_debug && step >= start_step + kSyncDebugFromStep);
      return train_step(run, step);
    }();
    metrics.add(result);
    const int64_t done = step + 1, tokens = done * run.tokens_per_step;
    // A preemption signal on any rank stops every rank after this step, with its checkpoint.
    const int signal = preemption_signal();
    const bool stop = world.count_failures(signal != 0) > 0;
    // The sync-free step is read here only, before anything is logged, evaluated or written: a
    // non-finite step since the last read stops the run (trainer/run/finite_watch.h).
    if (cadence.log(done) || cadence.eval(done) || cadence.spectra(done) ||
        cadence.checkpoint(done, stop))
      metrics.add_wait(run.finite_watch.check());
    if (cadence.log(done)) {
      std::vector<std::string> lines;
      const TrainRecord record = metrics.flush(done, lines);
      for (const std::string& line : lines)
        spdlog::info("{}", line);
      if (trace) trace->append(record);
    }
    if (cadence.eval(done)) {
      const EvalRecord record = evaluate_after(run, done);
      if (trace) trace->append(record);
    }
    if (cadence.spectra(done)) record_spectra(done);
    if (cadence.checkpoint(done, stop)) {
      const std::string path = checkpoint_path(run_dir, done);
      write_checkpoint_of(run, path, done, result.lr, cadence.intermediate(done));
      if (trace) {
        trace->append_checkpoint(done, tokens, cadence.intermediate(done));
        trace->back_up();  // what a resume from this checkpoint keeps, safe from a torn append
        cadence.prune_periodic(run_dir);
      }
      spdlog::info("checkpoint {}{}", path, cadence.intermediate(done) ? " (intermediate)" : "");
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
  spdlog::info(
      "done: {} steps, {} tokens in {}", r.train.steps,
      human_count(static_cast<double>(r.train.steps * run.tokens_per_step)),
      format_duration(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - loop_start).count()));
  return 0;
}

}  // namespace ladder
