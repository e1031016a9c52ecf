// Throughput of the trainer's own training step (trainer/run/train_step.h: forward and backward
// through the pipeline schedule, gradient reduction, the global norm, clipping, AdamW) on the dense
// model, built by the trainer's own set-up (trainer/run/run_context.h) from a recipe made of the
// flags. Prints tokens/s, model GFLOP/s, MFU against the trainer's peak (trainer/run/hardware.h
// mfu_peak), and peak memory (RSS; on CUDA also the allocator's peak).
//
//   build/bench/bench_train_step --d-model 512 --layers 8 --heads 8 --seq 256 --batch 8 --threads 2
//                                [--precision fp32|bf16] [--device cpu|cuda] [--peak-tflops T]
//                                [--fused 1|0] [--cuda-kernels 1|0] [--sync-free 1|0]
//                                [--cuda-graph 1] [--sync-debug 1] [--profile 1]
//                                [--data DIR | --vocab V] [--steps N]
// One micro-batch of --batch sequences per step, from --data (a `ladder prep` folder), or by
// default from uniformly random tokens of a --vocab-token vocabulary (default 257, the bytes
// tokenizer's), written as a dataset into a temporary folder first.
// --sync-free 1 runs train.sync_free_step (loss and norm on the device, ATen's fused AdamW with
// device-side clipping, reads at log steps only); --sync-debug 1 (CUDA) then times the steps under
// c10::cuda's sync-debug mode set to error: a step that waits for the device fails, naming the
// call.
// --cuda-kernels 1 runs kernels/cuda.h's fused CUDA kernels (train.fused_cuda_kernels);
// --cuda-graph 1 replays the step from a CUDA graph (train.cuda_graph; with --sync-free 1).
// --fused 0 runs the LibTorch composites instead of kernels/' fused CPU kernels
// (train.fused_kernels);
// --profile 1 then times as many more steps under core/op_profile.h and prints the time per
// operator class (matmul, attention, norm, rotary, activation, loss, optimizer, cast, ...);
// --profile 2 also the 30 operators with the most self time.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/hash.h"
#include "core/memory.h"
#include "core/op_profile.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "parallel/world.h"
#include "trainer/recipe/recipe.h"
#include "trainer/run/hardware.h"
#include "trainer/run/run_context.h"
#include "trainer/run/step_graph.h"
#include "trainer/run/train_step.h"

namespace {

namespace fs = std::filesystem;

struct Flags {
  int64_t d_model = 512, layers = 8, heads = 8, seq = 256, batch = 8, steps = 10, vocab = 257;
  int threads = 2;
  std::string precision = "fp32", device = "cpu", data;
  double peak_tflops = 0;  // a stated peak (a datasheet's) instead of the measured one
  bool fused = true, cuda_kernels = false, cuda_graph = false, sync_free = false;
  bool sync_debug = false;
  bool profile = false, profile_names = false;
};

// A dataset of `tokens` uniformly random tokens below `vocab` in `dir` (train and val splits), as
// `ladder prep` lays one out.
void write_random_dataset(const std::string& dir, int64_t vocab, int64_t tokens) {
  fs::create_directories(dir);
  ladder::data::DatasetMeta meta;
  meta.tokenizer_kind = "random";
  meta.tokenizer_identity = "random-uniform-" + std::to_string(vocab);
  meta.vocab_size = static_cast<uint32_t>(vocab);
  meta.eod_id = 0;
  const uint64_t hash = ladder::fnv1a64(meta.tokenizer_identity);
  const torch::Tensor ids = torch::randint(0, vocab, {tokens}, torch::kInt64);
  std::vector<ladder::data::TokenId> values(ids.data_ptr<int64_t>(),
                                            ids.data_ptr<int64_t>() + tokens);
  values.back() = meta.eod_id;  // one document, ended as a shard's documents are
  for (auto* split : {&meta.train, &meta.val}) {
    const std::string name = split == &meta.train ? "train_000000.bin" : "val_000000.bin";
    ladder::data::ShardWriter shard((fs::path(dir) / name).string(), meta.vocab_size, hash);
    shard.append_document(values.data(), values.size());
    shard.finish();
    split->tokens = static_cast<uint64_t>(tokens), split->documents = 1, split->shards = {name};
  }
  meta.write(dir);
}

// The recipe of the benchmark: what `ladder train` would run for these flags, without evaluation
// or checkpoints, at a constant learning rate.
std::string recipe_text(const Flags& f, const std::string& data, const std::string& out_dir,
                        int64_t steps) {
  return fmt::format(
      "[run]\nname = \"bench\"\nout_dir = \"{}\"\nseed = 0\n"
      "[data]\npath = \"{}\"\nseq_len = {}\n"
      "[model]\narch = \"dense\"\nd_model = {}\nn_layers = {}\nn_heads = {}\n"
      "[train]\nsteps = {}\nglobal_batch = {}\nmicro_batch = {}\nprecision = \"{}\"\n"
      "device = \"{}\"\nthreads = {}\nfused_kernels = {}\nfused_cuda_kernels = {}\n"
      "sync_free_step = {}\ncuda_graph = {}\n"
      "peak_gflops = {}\n"
      "[optim]\nlr = 1e-3\nweight_decay = 0.1\n"
      "[schedule]\nkind = \"constant\"\nwarmup = 0\n"
      "[checkpoint]\nevery_steps = 0\nintermediate = \"none\"\n"
      "[eval]\nevery_steps = 0\n",
      out_dir, data, f.seq, f.d_model, f.layers, f.heads, steps, f.batch, f.batch, f.precision,
      f.device, f.threads, f.fused ? "true" : "false", f.cuda_kernels ? "true" : "false",
      f.sync_free ? "true" : "false", f.cuda_graph ? "true" : "false", f.peak_tflops * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (flag == "--precision")
      f.precision = argv[i + 1];
    else if (flag == "--device")
      f.device = argv[i + 1];
    else if (flag == "--peak-tflops")
      f.peak_tflops = std::atof(argv[i + 1]);
    else if (flag == "--data")
      f.data = argv[i + 1];
    else if (flag == "--d-model")
      f.d_model = v;
    else if (flag == "--layers")
      f.layers = v;
    else if (flag == "--heads")
      f.heads = v;
    else if (flag == "--seq")
      f.seq = v;
    else if (flag == "--batch")
      f.batch = v;
    else if (flag == "--vocab")
      f.vocab = v;
    else if (flag == "--steps")
      f.steps = v;
    else if (flag == "--threads")
      f.threads = static_cast<int>(v);
    else if (flag == "--fused")
      f.fused = v != 0;
    else if (flag == "--sync-free")
      f.sync_free = v != 0;
    else if (flag == "--sync-debug")
      f.sync_debug = v != 0;
    else if (flag == "--cuda-kernels")
      f.cuda_kernels = v != 0;
    else if (flag == "--cuda-graph")
      f.cuda_graph = v != 0;
    else if (flag == "--profile")
      f.profile = v != 0, f.profile_names = v > 1;
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  ladder::parallel::MpiWorld world(&argc, &argv);
  ladder::keep_freed_cpu_memory();  // as `ladder train` does
  const fs::path scratch = fs::temp_directory_path() / ("ladder-bench-" + std::to_string(getpid()));
  int status = 0;
  try {
    // A graph is captured at the step after its eager ones: capturing belongs to the warm-up.
    const int64_t warmup = f.cuda_graph ? ladder::StepGraph::kWarmupSteps + 2 : 2;
    const int64_t timed = f.steps * (f.profile ? 2 : 1);
    std::string data = f.data;
    if (data.empty()) {
      data = (scratch / "random").string();
      torch::manual_seed(0);
      write_random_dataset(data, f.vocab, (warmup + timed + 1) * f.batch * (f.seq + 1));
    }
    ladder::Recipe recipe =
        ladder::parse_recipe(recipe_text(f, data, (scratch / "runs").string(), warmup + timed),
                             "bench_train_step", scratch.string(), {{}, world.size(), {}});
    ladder::resolve_threads_and_device(recipe, world);
    ladder::resolve_precision(recipe, world);
    ladder::RunData run_data;
    run_data.train = std::make_shared<ladder::data::TokenDataset>(data, "train");
    const ladder::parallel::Communicator world_comm = ladder::parallel::Communicator::world();
    ladder::RunContext run(recipe, world_comm, run_data);
    run.model->set_objective_scale(1.0 / static_cast<double>(run.step_micro));
    const torch::Device device = run.device;
    auto sync = [&] {
      if (device.is_cuda()) c10::cuda::device_synchronize();
    };
    int64_t step = 0;
    double schedule_s = 0, rest_s = 0;  // the pipeline's forward + backward, and the rest
    auto timed_steps = [&](int64_t n, bool sync_debug) {
      schedule_s = rest_s = 0;
      const auto t = std::chrono::steady_clock::now();
      {
        const ladder::SyncDebugScope scope(sync_debug && device.is_cuda());
        for (int64_t i = 0; i < n; ++i, ++step) {
          const ladder::StepResult r = ladder::train_step(run, step);
          schedule_s += r.pipeline.seconds, rest_s += r.seconds - r.pipeline.seconds;
        }
      }
      run.finite_watch.check();  // the sync-free step's one read (a diverged bench stops here)
      sync();
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    };
    timed_steps(warmup, false);  // allocator, OpenMP pool
    const double s = timed_steps(f.steps, f.sync_debug);
    const double tokens_per_s = static_cast<double>(f.steps * f.batch * f.seq) / s;
    const auto& acc = run.accounting;
    const double model_gflops = acc.flops_per_token * tokens_per_s / 1e9;
    const ladder::MfuPeak peak = ladder::mfu_peak(recipe, run.vocab, world_comm);
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    std::printf(
        "ladder  d_model=%lld layers=%lld heads=%lld seq=%lld batch=%lld vocab=%lld threads=%lld "
        "precision=%s device=%s fused=%d cuda_kernels=%d sync_free=%d cuda_graph=%d\n",
        (long long)f.d_model, (long long)f.layers, (long long)f.heads, (long long)f.seq,
        (long long)f.batch, (long long)run.vocab, (long long)recipe.train.threads,
        ladder::choice_name(ladder::kPrecisionNames, recipe.train.precision), device.str().c_str(),
        f.fused ? 1 : 0, f.cuda_kernels ? 1 : 0, f.sync_free ? 1 : 0, f.cuda_graph ? 1 : 0);
    std::printf("ladder  params %.2fM, %.1f MFLOP/token\n", acc.total_params / 1e6,
                acc.flops_per_token / 1e6);
    std::printf(
        "ladder  step %.3f s, %.0f tokens/s, %.1f model GFLOP/s, MFU %.1f%% of %.1f GFLOP/s "
        "(%s), peak RSS %.0f MB\n",
        s / f.steps, tokens_per_s, model_gflops, 100 * model_gflops / peak.gflops, peak.gflops,
        peak.source.c_str(), usage.ru_maxrss / 1024.0);
    if (device.is_cuda()) {
      const auto stats =
          c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
      std::printf("ladder  peak GPU memory allocated %.0f MB\n",
                  stats.allocated_bytes[0].peak / 1048576.0);
    }
    std::printf(
        "ladder  per step: forward + backward %.3f s, gradient reduction + norm + clip + AdamW "
        "%.3f s\n",
        schedule_s / f.steps, rest_s / f.steps);
    if (f.profile) {
      // Separate steps: the listener's own cost (a clock read per operator) stays out of the
      // timing.
      std::map<std::string, double> by_class, by_name;
      double wall = 0;
      {
        const ladder::OpProfile op_profile;
        wall = timed_steps(f.steps, false);
        by_class = op_profile.seconds();
        by_name = op_profile.seconds_by_name();
      }
      double total = 0;
      for (const auto& [name, t] : by_class)
        total += t;
      std::vector<std::pair<double, std::string>> rows;
      for (const auto& [name, t] : by_class)
        rows.emplace_back(t, name);
      std::sort(rows.rbegin(), rows.rend());
      std::printf("profile  %lld steps, %.3f s per step (%.3f s inside operators), per class:\n",
                  (long long)f.steps, wall / f.steps, total / f.steps);
      for (const auto& [t, name] : rows)
        std::printf("profile  %-12s %8.1f ms  %5.1f%%\n", name.c_str(), 1e3 * t / f.steps,
                    100 * t / total);
      if (f.profile_names) {
        std::vector<std::pair<double, std::string>> ops;
        for (const auto& [name, t] : by_name)
          ops.emplace_back(t, name);
        std::sort(ops.rbegin(), ops.rend());
        for (size_t i = 0; i < ops.size() && i < 30; ++i)
          std::printf("profile-op  %-60s %8.2f ms\n", ops[i].second.c_str(),
                      1e3 * ops[i].first / f.steps);
      }
    }
    std::printf("RESULT ladder_tokens_per_s %.1f\n", tokens_per_s);
  } catch (const ladder::Error& e) {
    std::fprintf(stderr, "ladder: error: %s: %s\n", e.where().c_str(), e.detail().c_str());
    status = 2;
  }
  std::error_code ignored;
  fs::remove_all(scratch, ignored);
  return status;
}
