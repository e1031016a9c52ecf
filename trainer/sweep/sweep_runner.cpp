#include "trainer/sweep/sweep_runner.h"

#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/files.h"
#include "core/format.h"
#include "core/hdf5.h"
#include "core/log.h"
#include "core/trace_schema.h"
#include "parallel/world.h"
#include "trainer/run/hardware.h"
#include "trainer/run/memory_estimate.h"
#include "trainer/run/preemption.h"
#include "trainer/run/train.h"
#include "trainer/sweep/sweep.h"
#include "trainer/sweep/sweep_index.h"

namespace ladder {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string self_binary() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("ladder") : p.string();
}

// The command that trains `run` as a separate job: `<mpirun> -np K ladder train <recipe> --set
// ...`.
std::string run_command(const Sweep& sweep, const SweepRun& run,
                        const std::vector<std::string>& extra_overrides, const std::string& tail,
                        bool with_launcher) {
  std::string cmd;
  if (with_launcher) cmd = sweep.mpirun + " -np " + std::to_string(sweep.ranks) + " ";
  cmd += shell_quote(self_binary()) + " train " +
         shell_quote(fs::absolute(sweep.recipe_path).string());
  for (const auto& a : run.set_arguments())
    cmd += " --set " + shell_quote(a);
  for (const auto& a : extra_overrides)
    cmd += " --set " + shell_quote(a);
  return cmd + tail;
}

// Runs a shell command, its output teed to stderr (unless quiet) and appended to `log`. Returns
// the exit status and the last "ladder: error:" line (or a description of how it ended).
std::pair<int, std::string> run_job(const std::string& command, const std::string& log,
                                    bool quiet) {
  std::ofstream out(log, std::ios::app | std::ios::binary);
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return {-1, "ladder: error: cannot start: " + command};
  std::string last_error, line;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) {
    out.write(buf, static_cast<std::streamsize>(n));
    out.flush();
    if (!quiet) std::fwrite(buf, 1, n, stderr);
    for (size_t i = 0; i < n; ++i) {
      if (buf[i] != '\n') {
        line += buf[i];
        continue;
      }
      if (line.find("ladder: error:") != std::string::npos) last_error = line;
      line.clear();
    }
  }
  if (line.find("ladder: error:") != std::string::npos) last_error = line;
  const int raw = ::pclose(pipe);
  int status = -1;
  if (WIFEXITED(raw)) {
    status = WEXITSTATUS(raw);
  } else if (WIFSIGNALED(raw)) {
    status = 128 + WTERMSIG(raw);
  }
  if (status != 0 && last_error.empty())
    last_error = "ladder: error: the job ended with status " + std::to_string(status);
  return {status, last_error};
}

// Keeps two sweeps from running the same folder at once (the lock goes with the process).
class SweepLock {
 public:
  explicit SweepLock(const std::string& dir) {
    create_output_folder(dir);
    const std::string path = (fs::path(dir) / "sweep.lock").string();
    fd_ = ::open(path.c_str(), O_CREAT | O_RDWR, 0644);
    if (fd_ < 0 || ::flock(fd_, LOCK_EX | LOCK_NB) != 0)
      throw Error(dir, "another `ladder sweep` is running in this folder");
  }
  ~SweepLock() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_ = -1;
};

// What a run's step time depends on: everything but its length, learning rate, schedule, name and
// checkpoints (the architecture sections included: experts, SSM sizes, streams). Runs with the same
// shape share one measurement.
std::string shape_of(const Recipe& r) {
  std::string shape;
  for (const auto& doc : recipe_schema()) {
    const std::string section = doc.key.substr(0, doc.key.find('.'));
    const bool architecture = section == "moe" || section == "hybrid" || section == "parscale";
    if (section != "data" && section != "model" && section != "parallel" && section != "train" &&
        !architecture && doc.key != "optim.zero")
      continue;
    // Neither the length nor which data the rows come from changes a step's time.
    if (doc.key == "train.steps" || doc.key == "train.tokens" || doc.key == "train.log_every" ||
        doc.key == "train.peak_gflops" || doc.key == "data.mixture" || doc.key == "data.weights")
      continue;
    shape += doc.key + "=" + recipe_value_toml(r, doc.key) + "\n";
  }
  return shape;
}

struct Estimate {
  double step_s = std::nan("");   // measured
  double seconds = std::nan("");  // the run's estimate
};

// The FLOPs `run` trains itself: all of them, or a cooldown's from its branch step.
double own_flops(const SweepRun& run) {
  return run.flops * static_cast<double>(run.recipe.train.steps - run.branch_step) /
         static_cast<double>(run.recipe.train.steps);
}

// The share of what `run` trains that is still to do (a cooldown trains from its branch step).
double share_left(const SweepRun& run, const RunState& state) {
  const int64_t from = run.branch_step, to = run.recipe.train.steps;
  const int64_t at = std::clamp(state.steps_done, from, to);
  return static_cast<double>(to - at) / static_cast<double>(std::max<int64_t>(1, to - from));
}

class SweepRunner {
 public:
  SweepRunner(Sweep sweep, const SweepOptions& options)
      : sweep_(std::move(sweep)), options_(options) {}

  int run() {
    for (const auto& r : sweep_.runs)
      check_run_folder(r);
    for (const auto& r : sweep_.stable_runs)
      check_run_folder(r);
    states_.clear();
    for (const auto& r : sweep_.runs)
      states_.push_back(read_run_state(r));
    stable_states_.clear();
    for (const auto& r : sweep_.stable_runs)
      stable_states_.push_back(read_run_state(r));
    if (options_.slurm) return write_slurm();
    if (options_.estimate && !options_.status) estimate();
    print_plan();
    if (options_.dry_run) return 0;
    if (options_.status) {
      // A sweep running in the folder keeps its own index (it marks the run it is on).
      try {
        SweepLock lock(sweep_.dir);
        write_index(sweep_, states_);
        std::printf("index        %s/index.csv, %s/index.h5\n", sweep_.dir.c_str(),
                    sweep_.dir.c_str());
      } catch (const Error&) {
        std::printf("index        left to the `ladder sweep` running in %s\n", sweep_.dir.c_str());
      }
      return 0;
    }
    write_index(sweep_, states_);
    return execute();
  }

 private:
  const parallel::MpiWorld& world() {
    if (!world_) world_.emplace(options_.argc, options_.argv);
    return *world_;
  }

  // Trains `recipe` in this process (a branch of `branch_from` when given); returns "" or the
  // error.
  std::string train_here(Recipe recipe, const std::string& resume,
                         const std::string& branch_from = "") {
    try {
      resolve_threads_and_device(recipe, world());
      resolve_precision(recipe, world());
      TrainOptions options;
      options.resume = resume, options.branch_from = branch_from;
      const int status = train(recipe, options, world());
      close_log_file();
      return status == 0 ? ""
                         : "ladder: error: the run ended with status " + std::to_string(status);
    } catch (const std::exception& e) {
      close_log_file();
      return format_error(e);
    }
  }

  // ----- The plan's estimates: one short measured run per model shape. -----
  void estimate() {
    std::map<std::string, double> measured;  // shape -> seconds per step
    const auto start = Clock::now();
    std::random_device rd;
    const fs::path scratch =
        fs::temp_directory_path() /
        ("ladder-sweep-probe-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    const std::vector<std::string> probe = {"run.out_dir=\"" + scratch.string() + "\"",
                                            "run.name=\"probe\"",
                                            "train.steps=4",
                                            "train.log_every=1",
                                            "schedule.warmup=0",
                                            "schedule.warmup_tokens=0",
                                            "checkpoint.intermediate=\"none\"",
                                            "checkpoint.every_steps=0",
                                            "eval.every_steps=0",
                                            "eval.average=\"none\"",
                                            "eval.sets=[]",
                                            "train.peak_gflops=1"};
    int shapes = 0;
    // The seconds `run` takes for `steps` of its steps (a cooldown trains only its own).
    auto estimate_of = [&](const SweepRun& run, int64_t steps_to_run) {
      const std::string shape = shape_of(run.recipe);
      if (!measured.count(shape)) {
        ++shapes;
        spdlog::info("sweep: measuring a step of model shape {} ({}, N={})", shapes, run.name,
                     human_count(static_cast<double>(run.size.non_embedding_params)));
        std::error_code ec;
        fs::remove_all(scratch, ec);
        std::string error;
        if (sweep_.launch == "inprocess") {
          const auto level = spdlog::get_level();
          spdlog::set_level(spdlog::level::warn);
          error = train_here(load_run_recipe(sweep_, run, probe), "");
          spdlog::set_level(level);
        } else {
          fs::create_directories(scratch);
          error = run_job(run_command(sweep_, run, probe, " --log-level warn", true),
                          (scratch / "console.txt").string(), true)
                      .second;
        }
        double step_s = std::nan("");
        if (error.empty()) {
          try {
            h5::File f = h5::File::open((scratch / "probe" / "trace.h5").string(), false);
            const torch::Tensor t =
                h5::read_tensor(f, trace_schema::path("train", "step_s")).to(torch::kFloat64);
            if (t.numel() >= 2) step_s = t.slice(0, 1).median().item<double>();
          } catch (const Error& e) {
            error = format_error(e);
          }
        }
        if (!error.empty())
          spdlog::warn("sweep: measuring {} failed, no estimate for its shape: {}", run.name,
                       error);
        measured[shape] = step_s;
        fs::remove_all(scratch, ec);
      }
      Estimate e;
      e.step_s = measured[shape];
      const Recipe& r = run.recipe;
      const double steps = static_cast<double>(steps_to_run);
      double eval_s = 0;
      if (r.eval.every_steps > 0) {
        // Forward only over eval.tokens: a third of a training step's work per token.
        const double evals = std::ceil(steps / static_cast<double>(r.eval.every_steps));
        const double tokens_per_s =
            static_cast<double>(r.train.global_batch * r.data.seq_len) / e.step_s;
        // The validation split, and each eval set (eval.sets) at the same cost.
        eval_s = evals * static_cast<double>(r.eval.tokens) *
                 static_cast<double>(1 + r.eval.sets.size()) / (3 * tokens_per_s);
      }
      e.seconds = steps * e.step_s + eval_s;
      return e;
    };
    stable_estimates_.assign(sweep_.stable_runs.size(), Estimate{});
    for (size_t j = 0; j < sweep_.stable_runs.size(); ++j)
      if (stable_states_[j].status != "done")
        stable_estimates_[j] =
            estimate_of(sweep_.stable_runs[j], sweep_.stable_runs[j].recipe.train.steps);
    estimates_.assign(sweep_.runs.size(), Estimate{});
    for (size_t i = 0; i < sweep_.runs.size(); ++i)
      if (states_[i].status != "done")
        estimates_[i] = estimate_of(sweep_.runs[i],
                                    sweep_.runs[i].recipe.train.steps - sweep_.runs[i].branch_step);
    estimate_seconds_ = seconds_since(start);
    estimated_shapes_ = shapes;
  }

  // ----- The plan -----
  void print_plan() const {
    std::string axes;
    for (const auto& a : sweep_.axes)
      axes += (axes.empty() ? "" : " x ") + a;
    std::printf("sweep        %s: %zu run%s%s\n", sweep_.name.c_str(), sweep_.runs.size(),
                sweep_.runs.size() == 1 ? "" : "s", axes.empty() ? "" : (" = " + axes).c_str());
    std::printf("file         %s\n", sweep_.path.c_str());
    std::printf("recipe       %s\n", sweep_.recipe_path.c_str());
    std::printf("folder       %s\n", sweep_.dir.c_str());
    if (sweep_.launch == "inprocess")
      std::printf("launch       one after another in this process, 1 rank each\n");
    else
      std::printf("launch       one after another: %s -np %lld ladder train ...\n",
                  sweep_.mpirun.c_str(), static_cast<long long>(sweep_.ranks));
    size_t width = 3;
    for (const auto& r : sweep_.runs)
      width = std::max(width, r.name.size());
    for (const auto& r : sweep_.stable_runs)
      width = std::max(width, r.name.size());
    double stable_flops = 0, stable_left_flops = 0, stable_left_s = 0;
    bool all_estimated = !estimates_.empty();
    if (sweep_.cooldown) {
      std::printf(
          "cooldown     each run decays over its last %s of steps (%s) from a checkpoint "
          "of the stable run of its group (%s)\n",
          shortest_float(sweep_.cooldown->fraction).c_str(),
          choice_name(optim::kDecayShapeNames, sweep_.cooldown->shape),
          sweep_.cooldown->where.c_str());
      std::printf("\n%4s  %-*s  %8s  %8s  %9s  %7s  %8s  %s\n", "#", static_cast<int>(width),
                  "stable run", "N", "D", "C", "steps", "est.", "branch points, status");
      for (size_t j = 0; j < sweep_.stable_runs.size(); ++j) {
        const SweepRun& r = sweep_.stable_runs[j];
        const Estimate e = stable_estimates_.empty() ? Estimate{} : stable_estimates_[j];
        const bool done = stable_states_[j].status == "done";
        std::string points;
        for (const size_t m : r.members)
          points += (points.empty() ? "" : " ") + std::to_string(sweep_.runs[m].branch_step);
        std::printf("%4s  %-*s  %8s  %8s  %9.2e  %7lld  %8s  %s; %s\n",
                    ("s" + std::to_string(j + 1)).c_str(), static_cast<int>(width), r.name.c_str(),
                    human_count(static_cast<double>(r.size.non_embedding_params)).c_str(),
                    human_count(static_cast<double>(r.recipe.train.tokens)).c_str(), r.flops,
                    static_cast<long long>(r.recipe.train.steps),
                    done ? "-" : format_duration(e.seconds).c_str(), points.c_str(),
                    stable_states_[j].status.c_str());
        stable_flops += r.flops;
        if (!done) {
          stable_left_flops += r.flops * share_left(r, stable_states_[j]);
          if (std::isnan(e.seconds))
            all_estimated = false;
          else
            stable_left_s += e.seconds * share_left(r, stable_states_[j]);
        }
      }
    }
    std::printf("\n%4s  %-*s  %8s  %8s  %9s  %7s  %8s  %8s  %9s  %s\n", "#",
                static_cast<int>(width), "run", "N", "D", "C", "steps", "step", "est.", "mem/rank",
                "status");
    double total_flops = 0, spent_flops = 0, left_flops = stable_left_flops, left_s = stable_left_s;
    for (size_t i = 0; i < sweep_.runs.size(); ++i) {
      const SweepRun& r = sweep_.runs[i];
      const Estimate e = estimates_.empty() ? Estimate{} : estimates_[i];
      const bool done = states_[i].status == "done";
      char flops[32];
      std::snprintf(flops, sizeof flops, "%.2e", r.flops);
      std::string status = states_[i].status;
      if (status == "partial") status += " (step " + std::to_string(states_[i].steps_done) + ")";
      if (r.stable >= 0)
        status += " (from s" + std::to_string(r.stable + 1) + " at step " +
                  std::to_string(r.branch_step) + ")";
      // The memory a rank of the run needs (trainer/run/memory_estimate.h; fp32 where the precision
      // is still "auto").
      const std::string memory = human_count(estimate_memory(r.recipe, r.vocab).total()) + "B";
      std::printf(
          "%4zu  %-*s  %8s  %8s  %9s  %7lld  %8s  %8s  %9s  %s\n", i + 1, static_cast<int>(width),
          r.name.c_str(), human_count(static_cast<double>(r.size.non_embedding_params)).c_str(),
          human_count(static_cast<double>(r.recipe.train.tokens)).c_str(), flops,
          static_cast<long long>(r.recipe.train.steps),
          std::isnan(e.step_s) ? "-"
                               : (std::to_string(std::lround(e.step_s * 1e3)) + " ms").c_str(),
          done ? "-" : format_duration(e.seconds).c_str(), memory.c_str(), status.c_str());
      total_flops += r.flops;
      spent_flops += r.flops_spent;
      if (!done) {
        // A started run has the rest of its steps to go.
        const double rest = share_left(r, states_[i]);
        left_flops += own_flops(r) * rest;
        if (std::isnan(e.seconds))
          all_estimated = false;
        else
          left_s += e.seconds * rest;
      }
    }
    int done = 0;
    for (const auto& s : states_)
      done += s.status == "done";
    std::printf("\ntotal        C = %.3e FLOPs; %d done, %zu to run (C = %.3e)\n", total_flops,
                done, sweep_.runs.size() - done, left_flops);
    if (sweep_.cooldown)
      std::printf(
          "spent        C = %.3e FLOPs: %.3e in %zu stable run%s and %.3e in the cooldowns, "
          "%.2f of the runs trained independently\n",
          spent_flops, stable_flops, sweep_.stable_runs.size(),
          sweep_.stable_runs.size() == 1 ? "" : "s", spent_flops - stable_flops,
          spent_flops / total_flops);
    if (!estimates_.empty())
      std::printf("estimate     %s to run%s (a step measured on %d model shape%s in %.0f s)\n",
                  format_duration(left_s).c_str(), all_estimated ? "" : " for the runs measured",
                  estimated_shapes_, estimated_shapes_ == 1 ? "" : "s", estimate_seconds_);
    std::fflush(stdout);
  }

  // ----- Running -----
  // Trains `run` (resuming it where it stopped; a branch of `branch` when given), in this process
  // or as a job; returns "" or the error.
  std::string train_run(const SweepRun& run, const std::string& branch) {
    fs::create_directories(run.dir);
    if (sweep_.launch == "inprocess") return train_here(run.recipe, "auto", branch);
    const std::string from = branch.empty() ? "" : " --branch-from " + shell_quote(branch);
    return run_job(run_command(sweep_, run, {},
                               from + " --resume auto --log-level " + options_.log_level, true),
                   (fs::path(run.dir) / "console.txt").string(), false)
        .second;
  }

  // Records how a run ended and reads its state back: a run that ended without an error but also
  // without its final checkpoint failed too.
  RunState finish_run(const SweepRun& run, const std::string& error) {
    record_run_error(run, error);
    RunState state = read_run_state(run);
    if (error.empty() && state.status != "done") {
      record_run_error(run, "ladder: error: the run ended without its final checkpoint");
      state = read_run_state(run);
    }
    return state;
  }

  int stopped_by(int signal, const SweepRun& run) {
    for (size_t i = 0; i < sweep_.runs.size(); ++i)
      states_[i] = read_run_state(sweep_.runs[i]);
    write_index(sweep_, states_);
    spdlog::info("sweep: stopped by {} during {}; run `ladder sweep` again to continue",
                 signal_name(signal), run.name);
    return kExitStoppedBySignal;
  }

  // A file this process could not write (a full disk) leaves HDF5 unable to shut down
  // (core/hdf5.h): the next runs would fail alike, so the sweep stops here, recorded.
  void stop_if_a_file_could_not_be_written(const std::string& label, const std::string& error) {
    if (!h5::close_failed()) return;
    spdlog::error(
        "sweep: stopping after {}: a file could not be written ({}); fix the cause and run the "
        "sweep again",
        label, error);
    std::fflush(nullptr);
    std::_Exit(kExitUserError);
  }

  int execute() {
    install_preemption_handlers();
    SweepLock lock(sweep_.dir);
    {
      std::ofstream copy(fs::path(sweep_.dir) / "sweep.toml", std::ios::binary | std::ios::trunc);
      copy << sweep_.text;
    }
    const size_t total = sweep_.runs.size();
    // [cooldown]: the stable runs first, whose checkpoints the cooldowns branch from.
    for (size_t j = 0; j < sweep_.stable_runs.size(); ++j) {
      const SweepRun& stable = sweep_.stable_runs[j];
      const std::string label =
          fmt::format("stable run {}/{} {}", j + 1, sweep_.stable_runs.size(), stable.name);
      if (stable_states_[j].status == "done") {
        spdlog::info("sweep: {}: done, skipped", label);
        continue;
      }
      spdlog::info("sweep: {}: N={} for {} steps, for {} cooldowns", label,
                   human_count(static_cast<double>(stable.size.non_embedding_params)),
                   stable.recipe.train.steps, stable.members.size());
      const auto start = Clock::now();
      const std::string error = train_run(stable, "");
      if (const int signal = preemption_signal()) return stopped_by(signal, stable);
      stable_states_[j] = finish_run(stable, error);
      if (stable_states_[j].status != "done") {
        // Its cooldowns cannot start: each is marked with the stable run's error.
        for (const size_t m : stable.members)
          if (states_[m].status != "done") {
            record_run_error(sweep_.runs[m], "ladder: error: its stable run " + stable.name +
                                                 " failed: " + stable_states_[j].error);
            states_[m] = read_run_state(sweep_.runs[m]);
          }
        spdlog::error("sweep: {}: FAILED after {}: {}", label,
                      format_duration(seconds_since(start)), stable_states_[j].error);
      } else {
        spdlog::info("sweep: {}: done in {}", label, format_duration(seconds_since(start)));
      }
      write_index(sweep_, states_);
      stop_if_a_file_could_not_be_written(label, stable_states_[j].error);
    }
    double measured_s = 0, measured_estimate_s = 0, measured_flops = 0;
    int ran = 0;
    for (size_t i = 0; i < total; ++i) {
      const SweepRun& run = sweep_.runs[i];
      if (states_[i].status == "done") {
        spdlog::info("sweep: run {}/{} {}: done, skipped", i + 1, total, run.name);
        continue;
      }
      if (run.stable >= 0 && stable_states_[static_cast<size_t>(run.stable)].status != "done") {
        spdlog::info("sweep: run {}/{} {}: its stable run {} is not done, skipped", i + 1, total,
                     run.name, sweep_.stable_runs[static_cast<size_t>(run.stable)].name);
        continue;
      }
      const bool resume = states_[i].status == "partial" || states_[i].status == "failed";
      const int64_t start_step = states_[i].steps_done;
      spdlog::info("sweep: run {}/{} {}: N={} D={} C={:.2e}{}{}", i + 1, total, run.name,
                   human_count(static_cast<double>(run.size.non_embedding_params)),
                   human_count(static_cast<double>(run.recipe.train.tokens)), run.flops,
                   resume && start_step > 0 ? fmt::format(", resuming at step {}", start_step)
                                            : std::string(),
                   estimates_.empty() ? std::string()
                                      : ", estimated " + format_duration(estimates_[i].seconds));
      RunState running = states_[i];
      running.status = "running";
      states_[i] = running;
      write_index(sweep_, states_);

      const auto start = Clock::now();
      const RunState before = states_[i];
      std::string error = train_run(run, branch_checkpoint(sweep_, run));
      const double seconds = seconds_since(start);
      // A preemption signal stopped the run after its checkpoint: the sweep stops too, to be
      // continued by running it again (trainer/run/preemption.h).
      if (const int signal = preemption_signal()) return stopped_by(signal, run);
      states_[i] = finish_run(run, error);
      error = states_[i].status == "done" ? "" : states_[i].error;
      write_index(sweep_, states_);
      stop_if_a_file_could_not_be_written(fmt::format("run {}/{} {}", i + 1, total, run.name),
                                          error);
      ++ran;

      // Progress: the measured pace against the estimates (or the FLOP rate) gives the ETA.
      const double share = share_left(run, before);
      if (error.empty()) {
        measured_s += seconds;
        measured_flops += own_flops(run) * share;
        if (!estimates_.empty()) measured_estimate_s += estimates_[i].seconds * share;
      }
      int done = 0, failed = 0;
      double left_estimate = 0, left_flops = 0;
      for (size_t j = 0; j < total; ++j) {
        done += states_[j].status == "done";
        failed += states_[j].status == "failed";
        if (j > i && states_[j].status != "done") {
          const double rest = share_left(sweep_.runs[j], states_[j]);
          left_flops += own_flops(sweep_.runs[j]) * rest;
          if (!estimates_.empty()) left_estimate += estimates_[j].seconds * rest;
        }
      }
      const size_t left = total - done - failed;
      double eta = std::nan("");
      if (measured_s > 0) {
        if (!estimates_.empty() && measured_estimate_s > 0 && !std::isnan(left_estimate))
          eta = left_estimate * measured_s / measured_estimate_s;
        else if (measured_flops > 0)
          eta = left_flops / (measured_flops / measured_s);
      }
      const std::string outcome =
          error.empty()
              ? fmt::format(
                    "done in {}{}", format_duration(seconds),
                    estimates_.empty()
                        ? std::string()
                        : " (estimated " + format_duration(estimates_[i].seconds * share) + ")")
              : "FAILED after " + format_duration(seconds) + ": " + error;
      spdlog::info(
          "sweep: run {}/{} {}: {} | {} done, {} failed, {} left | {:.1f} GFLOP/s | sweep ETA {}",
          i + 1, total, run.name, outcome, done, failed, left,
          measured_s > 0 ? measured_flops / measured_s / 1e9 : 0.0, format_duration(eta));
    }
    int done = 0;
    std::string failures;
    for (size_t i = 0; i < total; ++i) {
      if (states_[i].status == "done") ++done;
      if (states_[i].status == "failed")
        failures += "\n  " + sweep_.runs[i].name + ": " + states_[i].error;
    }
    spdlog::info("sweep: {} of {} runs done ({} run now); index {}/index.csv", done, total, ran,
                 sweep_.dir);
    if (!failures.empty()) spdlog::error("sweep: failed runs:{}", failures);
    return done == static_cast<int>(total) ? 0 : 1;
  }

  // ----- Slurm -----
  int write_slurm() {
    const fs::path dir = fs::absolute(fs::path(sweep_.dir) / "slurm");
    fs::create_directories(dir);
    std::ofstream jobs(dir / "jobs.tsv", std::ios::binary | std::ios::trunc);
    int lines = 0;
    // A line: the run's folder, the checkpoint it waits for ("-": none) and its command. Stable
    // runs come first; a cooldown's task waits for its branch point's checkpoint.
    for (size_t j = 0; j < sweep_.stable_runs.size(); ++j) {
      if (stable_states_[j].status == "done") continue;
      const SweepRun& run = sweep_.stable_runs[j];
      jobs << fs::absolute(run.dir).string() << "\t-\t"
           << run_command(sweep_, run, {}, " --resume auto", false) << "\n";
      ++lines;
    }
    for (size_t i = 0; i < sweep_.runs.size(); ++i) {
      if (states_[i].status == "done") continue;
      const SweepRun& run = sweep_.runs[i];
      const std::string branch = branch_checkpoint(sweep_, run);
      const std::string wait = branch.empty() ? "-" : fs::absolute(branch).string();
      jobs << fs::absolute(run.dir).string() << "\t" << wait << "\t"
           << run_command(
                  sweep_, run, {},
                  (branch.empty() ? "" : " --branch-from " + shell_quote(wait)) + " --resume auto",
                  false)
           << "\n";
      ++lines;
    }
    jobs.close();
    write_index(sweep_, states_);
    if (lines == 0) {
      std::printf("every run of %s is done: nothing to submit\n", sweep_.name.c_str());
      return 0;
    }
    const fs::path script = dir / "array.sbatch";
    std::ofstream out(script, std::ios::binary | std::ios::trunc);
    out << "#!/bin/bash\n"
        << "# Written by `ladder sweep " << sweep_.path << " --slurm`: one array task per run of\n"
        << "# sweep " << sweep_.name << " that was not done then (" << lines << " of "
        << sweep_.runs.size() + sweep_.stable_runs.size() << "), listed in jobs.tsv.\n"
        << "# Submit with `sbatch " << script.string() << "` (options on the command line\n"
        << "# override these; launch/slurm-sweep.sh shows a full example). A task resumes its run\n"
        << "# from its newest checkpoint, so resubmitting continues the sweep; afterwards\n"
        << "# `ladder sweep " << sweep_.path << " --status` rebuilds the index.\n"
        << "#SBATCH --job-name=ladder-" << sweep_.name << "\n"
        << "#SBATCH --array=0-" << lines - 1 << "\n"
        << "#SBATCH --ntasks=" << sweep_.ranks << "\n"
        << "#SBATCH --output=" << (dir / "%x-%A_%a.out").string() << "\n"
        << "#SBATCH --open-mode=append\n"
        << "set -uo pipefail\n"
        << "# Recipes name data and output folders from here, as when the sweep was planned.\n"
        << "cd " << shell_quote(fs::current_path().string()) << "\n"
        << "line=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" "
        << shell_quote((dir / "jobs.tsv").string()) << ")\n"
        << "if [ -z \"$line\" ]; then echo \"no run for array task $SLURM_ARRAY_TASK_ID\" >&2; "
           "exit 2; fi\n"
        << "run_dir=${line%%$'\\t'*}\n"
        << "rest=${line#*$'\\t'}\n"
        << "wait_for=${rest%%$'\\t'*}\n"
        << "command=${rest#*$'\\t'}\n"
        << "mkdir -p \"$run_dir\"\n"
        << "if [ \"$wait_for\" != - ]; then\n"
        << "  # A cooldown ([cooldown]): the checkpoint of its stable run that it branches from,\n"
        << "  # written by another task of this array.\n"
        << "  stable_dir=$(dirname \"$(dirname \"$wait_for\")\")\n"
        << "  until [ -f \"$wait_for\" ]; do\n"
        << "    if [ -f \"$stable_dir/error.txt\" ]; then\n"
        << "      echo \"ladder: error: its stable run $stable_dir failed: $(cat "
           "\"$stable_dir/error.txt\")\" > \"$run_dir/error.txt\"\n"
        << "      exit 1\n"
        << "    fi\n"
        << "    sleep 30\n"
        << "  done\n"
        << "fi\n"
        << "eval \"srun $command\" 2>&1 | tee -a \"$run_dir/console.txt\"\n"
        << "status=${PIPESTATUS[0]}\n"
        << "if [ \"$status\" -eq 0 ]; then\n"
        << "  rm -f \"$run_dir/error.txt\"\n"
        << "else\n"
        << "  # The index reads a failed run's error from here, as for runs the sweep ran itself.\n"
        << "  { grep 'ladder: error:' \"$run_dir/console.txt\" | tail -n 1 | grep . ||\n"
        << "    echo \"ladder: error: the run ended with status $status\"; } > "
           "\"$run_dir/error.txt\"\n"
        << "fi\n"
        << "exit \"$status\"\n";
    out.close();
    fs::permissions(script, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                    fs::perm_options::add);
    std::printf("jobs         %s (%d runs)\n", (dir / "jobs.tsv").c_str(), lines);
    std::printf("script       %s\n", script.c_str());
    std::printf("submit       sbatch %s\n", script.c_str());
    std::printf("then         build/ladder sweep %s --status\n", sweep_.path.c_str());
    return 0;
  }

  Sweep sweep_;
  SweepOptions options_;
  std::vector<RunState> states_, stable_states_;
  std::vector<Estimate> estimates_, stable_estimates_;
  double estimate_seconds_ = 0;
  int estimated_shapes_ = 0;
  std::optional<parallel::MpiWorld> world_;
};

}  // namespace

int run_sweep(const std::string& path, const SweepOptions& options) {
  return SweepRunner(load_sweep(path), options).run();
}

}  // namespace ladder
