// Trains tiny models with the `ladder` binary on the bundled corpus, as a user would, and checks
// what lands on disk: loss traces, checkpoints, bitwise resume, NaN handling.
#include <gtest/gtest.h>

#include "kernels/cuda.h"

#include <filesystem>
#include <regex>

#include "core/error.h"
#include "core/hdf5.h"
#include "models/dense.h"
#include "optim/adamw.h"
#include "optim/parametrization.h"
#include "test_util.h"
#include "trainer/run/checkpoint.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

namespace fs = std::filesystem;
using testing::run_command;

class Training : public TrainingFixture {
 protected:
  static void expect_resume_is_bitwise(const std::string& prefix, const std::string& flags);
  static void expect_non_finite_stop(const std::string& name, const std::string& flags);
};

const char* kTrain12 =
    "[train]\nsteps = 12\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 6\nkeep = 1\n[eval]\nevery_steps = 6\n"
    "tokens = 256\n";

TEST_F(Training, LossDecreases) {
  const auto r = train(recipe("learn",
                              "[train]\nsteps = 40\nglobal_batch = 8\nmicro_batch = 4\n"
                              "log_every = 1\n[optim]\nlr = 1e-2\n[eval]\nevery_steps = 0\n"
                              "[checkpoint]\nevery_steps = 0\nintermediate = \"none\"\n"));
  ASSERT_EQ(r.status, 0) << r.output;
  // The start-up log names the attention kernel these shapes get (seq 32: the fused CPU one).
  EXPECT_NE(r.output.find("attention: ladder's fused CPU kernel (kernels/attention.h) for [4, 2, "
                          "32, 16] fp32"),
            std::string::npos)
      << r.output;
  const auto loss = series(run_dir("learn") + "/trace.h5", "train/loss");
  ASSERT_EQ(loss.size(), 40u);
  const double first = (loss[0] + loss[1] + loss[2]) / 3,
               last = (loss[37] + loss[38] + loss[39]) / 3;
  EXPECT_GT(first, 5.0);  // about ln(257) = 5.55 at init
  EXPECT_LT(last, first - 1.5) << "first " << first << " last " << last;
}

TEST_F(Training, TraceIsCompleteAndCheckpointsFollowTheSchedule) {
  const auto r = train(recipe("schema", kTrain12));
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string trace = run_dir("schema") + "/trace.h5";
  h5::File f = h5::File::open(trace, false);
  for (const char* col :
       {"step", "tokens", "flops", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "elapsed_s"})
    EXPECT_EQ(h5::series_length(f, std::string("train/") + col), 12) << col;
  for (const char* col : {"step", "tokens", "flops", "loss"})
    EXPECT_EQ(h5::series_length(f, std::string("eval/") + col), 2) << col;
  for (const char* a :
       {"N", "total_params", "active_params", "embedding_params", "width", "depth", "seq_len",
        "global_batch", "batch_tokens", "total_steps", "seed", "streams", "experts"})
    EXPECT_TRUE(h5::has_attr(f, "/", a)) << a;
  EXPECT_EQ(h5::get_string_attr(f, "/", "arch"), "dense");
  EXPECT_EQ(h5::get_int_attr(f, "/", "width"), 32);
  EXPECT_EQ(h5::get_int_attr(f, "/", "batch_tokens"), 4 * 32);
  EXPECT_NE(h5::get_string_attr(f, "/", "recipe").find("d_model = 32"), std::string::npos);
  f.close();
  EXPECT_EQ(series(trace, "train/step"),
            (std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(series(trace, "train/tokens")[11], 12.0 * 4 * 32);
  EXPECT_EQ(series(trace, "eval/step"), (std::vector<double>{6, 12}));
  // log2 intermediates 1, 2, 4, 8; periodic 6 and 12, of which keep = 1 leaves 12.
  EXPECT_EQ(series(trace, "checkpoints/step"), (std::vector<double>{1, 2, 4, 6, 8, 12}));
  EXPECT_EQ(series(trace, "checkpoints/intermediate"), (std::vector<double>{1, 1, 1, 0, 1, 0}));
  EXPECT_EQ(checkpoint_steps(run_dir("schema")), (std::vector<int64_t>{1, 2, 4, 8, 12}));
  EXPECT_TRUE(fs::exists(run_dir("schema") + "/recipe.toml"));
  EXPECT_NE(testing::read_file(run_dir("schema") + "/log.txt").find("[rank 0] info: step 12/12"),
            std::string::npos);
}

// A run of 12 steps against a run of 6 steps resumed for 6 more (constant learning rate, so the two
// runs' schedules agree), both with `flags`: their losses must be bitwise equal.
void Training::expect_resume_is_bitwise(const std::string& prefix, const std::string& flags) {
  const std::string constant = "kind = \"constant\"\nwarmup = 2\n";
  const std::string whole = prefix + "whole", half = prefix + "half";
  ASSERT_EQ(train(recipe(whole, kTrain12, constant), flags).status, 0);
  const std::string half_recipe = recipe(half, kTrain12, constant);
  ASSERT_EQ(train(half_recipe, flags + " --set train.steps=6").status, 0);
  const auto resumed = train(half_recipe, flags + " --resume auto");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  const auto a = series(run_dir(whole) + "/trace.h5", "train/loss");
  const auto b = series(run_dir(half) + "/trace.h5", "train/loss");
  ASSERT_EQ(a.size(), 12u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 0; i < 12; ++i)
    EXPECT_EQ(a[i], b[i]) << "step " << i + 1;  // bitwise
  EXPECT_EQ(series(run_dir(whole) + "/trace.h5", "eval/loss"),
            series(run_dir(half) + "/trace.h5", "eval/loss"));
}

TEST_F(Training, ResumeAfterMoreStepsIsBitwiseIdentical) {
  expect_resume_is_bitwise("", "");
}

TEST_F(Training, ResumeMidScheduleDropsTheLostTailAndIsBitwiseIdentical) {
  ASSERT_EQ(train(recipe("full", kTrain12)).status, 0);
  // Simulate a crash after step 6: a copy of the run without the checkpoints after it.
  fs::copy(run_dir("full"), run_dir("crashed"), fs::copy_options::recursive);
  for (int64_t s : checkpoint_steps(run_dir("crashed")))
    if (s > 6) fs::remove(checkpoint_path(run_dir("crashed"), s));
  const std::string again = recipe("crashed", kTrain12);
  // Without --resume, an existing run is not overwritten.
  const auto refused = train(again);
  EXPECT_EQ(refused.status, 2);
  EXPECT_NE(refused.output.find("already holds a run; continue it with --resume auto"),
            std::string::npos)
      << refused.output;
  const auto r = train(again, "--resume auto");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* s : {"train/step", "train/loss", "train/lr", "train/grad_norm", "eval/loss"})
    EXPECT_EQ(series(run_dir("full") + "/trace.h5", s), series(run_dir("crashed") + "/trace.h5", s))
        << s;
}

TEST_F(Training, Bf16ResumeIsBitwiseIdenticalAndRecordsThePrecision) {
  expect_resume_is_bitwise("bf16_", "--set train.precision=bf16");
  const auto a = series(run_dir("bf16_whole") + "/trace.h5", "train/loss");
  ASSERT_EQ(a.size(), 12u);
  // bf16 really ran: the losses differ from an fp32 run of the same recipe.
  ASSERT_EQ(train(recipe("fp32_whole", kTrain12, "kind = \"constant\"\nwarmup = 2\n")).status, 0);
  EXPECT_NE(series(run_dir("fp32_whole") + "/trace.h5", "train/loss")[11], a[11]);
  h5::File t = h5::File::open(run_dir("bf16_whole") + "/trace.h5", false);
  EXPECT_EQ(h5::get_string_attr(t, "/", "precision"), "bf16");
  EXPECT_EQ(h5::get_string_attr(t, "/", "device"), "cpu");
  h5::File c = h5::File::open(checkpoint_path(run_dir("bf16_whole"), 12), false);
  EXPECT_EQ(h5::get_string_attr(c, "/", "precision"), "bf16");
}

TEST_F(Training, Bf16EndsWithinTwoPercentOfFp32) {
  const std::string body =
      "[train]\nsteps = 60\nglobal_batch = 8\nmicro_batch = 4\nlog_every = 10\n"
      "[optim]\nlr = 1e-2\n[eval]\nevery_steps = 60\ntokens = 4096\n"
      "[checkpoint]\nevery_steps = 0\nintermediate = \"none\"\n";
  ASSERT_EQ(train(recipe("mp_fp32", body)).status, 0);
  const auto r = train(recipe("mp_bf16", body), "--set train.precision=bf16");
  ASSERT_EQ(r.status, 0) << r.output;
  const double fp32 = series(run_dir("mp_fp32") + "/trace.h5", "eval/loss").back();
  const double bf16 = series(run_dir("mp_bf16") + "/trace.h5", "eval/loss").back();
  EXPECT_LT(fp32, 3.5);  // it learned (ln 257 = 5.55 at init)
  EXPECT_LT(std::abs(bf16 - fp32) / fp32, 0.02) << "fp32 " << fp32 << " bf16 " << bf16;
}

TEST_F(Training, AutoPrecisionResolvesAtStartAndIsRecorded) {
  const auto r = train(recipe("auto", kTrain12), "--set train.precision=auto --set train.steps=3");
  ASSERT_EQ(r.status, 0) << r.output;
  h5::File t = h5::File::open(run_dir("auto") + "/trace.h5", false);
  const std::string resolved = h5::get_string_attr(t, "/", "precision");
  EXPECT_TRUE(resolved == "fp32" || resolved == "bf16") << resolved;
  // The run's recipe keeps "auto" (valid on any machine) and says what it resolved to.
  EXPECT_NE(testing::read_file(run_dir("auto") + "/recipe.toml")
                .find("precision = \"auto\"  # derived: \"" + resolved + "\""),
            std::string::npos);
  EXPECT_NE(r.output.find("precision " + resolved), std::string::npos) << r.output;
}

TEST_F(Training, CudaTrainsLikeTheCpuOrIsACleanErrorWithoutAGpu) {
  const std::string name = "cuda";
  if (!torch::cuda::is_available()) {
    const auto r = train(recipe(name, kTrain12), "--set train.device=cuda");
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.output.find("ladder: error: train.device = \"cuda\": no CUDA device is visible"),
              std::string::npos)
        << r.output;
    EXPECT_EQ(r.output.find("Traceback"), std::string::npos);
    EXPECT_FALSE(fs::exists(run_dir(name))) << "refused before any work";
    return;
  }
  // With a GPU: the same run on the GPU and on the CPU, in fp32, agree closely (different kernels,
  // so not bitwise).
  ASSERT_EQ(train(recipe("cpu_ref", kTrain12)).status, 0);
  const auto r = train(recipe(name, kTrain12), "--set train.device=cuda");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto a = series(run_dir("cpu_ref") + "/trace.h5", "train/loss");
  const auto b = series(run_dir(name) + "/trace.h5", "train/loss");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], b[i], 2e-3 * a[i]) << "step " << i + 1;
}

// A run whose learning rate makes the step non-finite stops with the step named, and keeps no
// checkpoint of that state or after it.
void Training::expect_non_finite_stop(const std::string& name, const std::string& flags) {
  const auto r =
      train(recipe(name, kTrain12 + std::string("[optim]\nlr = 1e30\ngrad_clip = 0.0\n")), flags);
  EXPECT_EQ(r.status, 2) << r.output;
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(r.output, m,
                        std::regex("ladder: error: train: step ([0-9]+): (the training loss|"
                                   "the gradient norm)[^\n]* is (nan|inf|-nan)")))
      << r.output;
  const int64_t failed = std::stoll(m[1]);
  EXPECT_NE(r.output.find("stopping without writing a checkpoint"), std::string::npos);
  for (int64_t s : checkpoint_steps(run_dir(name)))
    EXPECT_LT(s, failed);
}

TEST_F(Training, NonFiniteLossStopsWithoutCheckpointingIt) {
  expect_non_finite_stop("diverge", "");
}

// The sync-free update (train.sync_free_step: ATen's fused AdamW, clipping and the finite check
// from device tensors) trains as the host-checked update does, to fp32 rounding, with clipping
// active at every step (grad_clip 0.05), in one process and under ZeRO-1 over 2 ranks (pieces of
// parameters, the norm summed over the ranks on the device).
TEST_F(Training, SyncFreeUpdateTrainsAsTheHostCheckedUpdate) {
  const std::string extra = kTrain12 + std::string("[optim]\ngrad_clip = 0.05\n");
  expect_layouts_match_one_process(
      "host_update", extra, "",
      {{"sync_free", "--set train.sync_free_step=true", 0},
       {"sync_free_zero1", "--set train.sync_free_step=true --set optim.zero=1", 2}},
      1e-5);
  // Clipping was active: every logged gradient norm is above the limit.
  for (double norm : series(run_dir("host_update") + "/trace.h5", "train/grad_norm"))
    EXPECT_GT(norm, 0.05);
}

TEST_F(Training, NonFiniteStepStopsTheSyncFreeUpdateWithoutCheckpointingIt) {
  expect_non_finite_stop("diverge_sync_free", "--set train.sync_free_step=true");
}

// The sync-free step reads the device only before a log line, an evaluation or a checkpoint: a run
// that diverges between two reads names the first non-finite step (the one the host-checked step
// stops at), says when it was read, and writes no trace row or checkpoint from that step on.
TEST_F(Training, TheSyncFreeStepNamesTheFirstNonFiniteStepAtItsNextRead) {
  const std::string diverging =
      "[train]\nsteps = 12\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 6\n"
      "[checkpoint]\nevery_steps = 0\nintermediate = [1]\n[eval]\nevery_steps = 0\n"
      "[optim]\nlr = 1e30\ngrad_clip = 0.0\n";
  const std::regex named(
      "ladder: error: train: step ([0-9]+): (the training loss|the gradient "
      "norm) is ([-a-z]+)( \\(read after step ([0-9]+))?");
  const auto host = train(recipe("diverge_host_read", diverging));
  EXPECT_EQ(host.status, 2) << host.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(host.output, m, named)) << host.output;
  const int64_t first_bad = std::stoll(m[1]);
  ASSERT_GT(first_bad, 1) << "the run must diverge after the checkpoint at step 1";
  ASSERT_LT(first_bad, 6) << "the run must diverge before the first log step";
  EXPECT_FALSE(m[4].matched) << host.output;  // the host-checked step reads at once

  const auto sync_free =
      train(recipe("diverge_deferred_read", diverging), "--set train.sync_free_step=true");
  EXPECT_EQ(sync_free.status, 2) << sync_free.output;
  ASSERT_TRUE(std::regex_search(sync_free.output, m, named)) << sync_free.output;
  EXPECT_EQ(std::stoll(m[1]), first_bad) << sync_free.output;
  ASSERT_TRUE(m[4].matched) << sync_free.output;
  EXPECT_EQ(std::stoll(m[5]), 6) << sync_free.output;  // read at the first log step
  EXPECT_EQ(checkpoint_steps(run_dir("diverge_deferred_read")), (std::vector<int64_t>{1}));
  EXPECT_TRUE(series(run_dir("diverge_deferred_read") + "/trace.h5", "train/step").empty());
}

// On a GPU: the sync-free step, eager and replayed from a CUDA graph (train.cuda_graph: 3 eager
// steps, then one captured and replayed for the other 17), train alike within bf16 rounding, and
// the fused CUDA kernels train as the composites do. Skips without a GPU.
TEST_F(Training, OnAGpuTheGraphAndTheFusedKernelsTrainAsTheEagerStep) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  const std::string steps20 =
      "[train]\nsteps = 20\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n"
      "[checkpoint]\nevery_steps = 0\nintermediate = \"none\"\n[eval]\nevery_steps = 10\n"
      "tokens = 256\n[optim]\ngrad_clip = 0.5\n";
  const std::string gpu =
      "--set train.device=\"cuda\" --set train.precision=bf16 --set train.sync_free_step=true";
  std::vector<Layout> variants = {{"gpu_graph", "--set train.cuda_graph=true", 1}};
  if (kernels::cuda_kernels_built())  // a build without nvcc refuses the fused CUDA kernels
    variants.insert(variants.end(),
                    {{"gpu_fused", "--set train.fused_cuda_kernels=true", 1},
                     {"gpu_fused_graph",
                      "--set train.fused_cuda_kernels=true --set train.cuda_graph=true", 1}});
  expect_layouts_match_one_process("gpu_eager", steps20, gpu, variants, 2e-2);
}

// On a GPU: the sync-free step never waits for the device between its reads (LADDER_SYNC_DEBUG=1:
// c10::cuda's sync-debug mode set to error around each step after the third), eager, from a graph,
// and with the fused CUDA kernels. Skips without a GPU.
TEST_F(Training, OnAGpuTheSyncFreeStepNeverWaitsForTheDevice) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  const std::string steps12 =
      "[train]\nsteps = 12\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 6\n"
      "[checkpoint]\nevery_steps = 0\nintermediate = \"none\"\n[eval]\nevery_steps = 0\n";
  std::vector<std::string> variants = {"", "--set train.cuda_graph=true"};
  if (kernels::cuda_kernels_built())
    variants.push_back("--set train.fused_cuda_kernels=true --set train.cuda_graph=true");
  int k = 0;
  for (const std::string& variant : variants) {
    const std::string name = "gpu_sync_debug_" + std::to_string(k++);
    const auto r =
        run_command("LADDER_SYNC_DEBUG=1 " +
                    train_command(recipe(name, steps12),
                                  "--set train.device=\"cuda\" --set "
                                  "train.precision=bf16 --set train.sync_free_step=true " +
                                      variant));
    EXPECT_EQ(r.status, 0) << variant << "\n" << r.output;
    EXPECT_NE(r.output.find("LADDER_SYNC_DEBUG=1: steps from 4 on fail"), std::string::npos);
  }
}

TEST_F(Training, InspectSummarisesCheckpointTraceAndDataset) {
  ASSERT_EQ(train(recipe("inspected", kTrain12)).status, 0);
  auto r = run_command(testing::ladder_binary() + " inspect " +
                       checkpoint_path(run_dir("inspected"), 12));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("layers.1.attn.wq"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("hidden"), std::string::npos) << r.output;
  r = run_command(testing::ladder_binary() + " inspect " + run_dir("inspected") + "/trace.h5");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("train              12 rows"), std::string::npos) << r.output;
  r = run_command(testing::ladder_binary() + " inspect " + dir_->path("ds"));
  EXPECT_NE(r.output.find("bytes-v1"), std::string::npos) << r.output;
  r = run_command(testing::ladder_binary() + " inspect " + dir_->path("ds.toml"));
  EXPECT_EQ(r.status, 2);
}

// Trace and checkpoint are readable with h5py, as users (and the fitter's Python users) read them.
TEST_F(Training, FitReadsTheTracesOfRealRuns) {
  // Two widths, an evaluation every 2 steps: 6 points each, none in the first 10% of tokens.
  const std::string runs = dir_->path("fit_runs");
  for (const char* width : {"32", "48"})
    ASSERT_EQ(train(recipe(std::string("w") + width, kTrain12),
                    "--set eval.every_steps=2 --set model.d_model=" + std::string(width) +
                        " --set run.out_dir=" + runs)
                  .status,
              0);
  const auto r =
      run_command(testing::ladder_binary() + " fit " + runs +
                  " --law kaplan-c --bootstrap 5 --no-plots --out " + dir_->path("fit_out"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("12 points from 2 runs"), std::string::npos) << r.output;
  const std::string json = testing::read_file(dir_->path("fit_out/fit.json"));
  EXPECT_NE(json.find("\"alpha_C\""), std::string::npos);
  EXPECT_NE(json.find("\"points\": 12"), std::string::npos) << json;
}

// A mixture of the corpus's genres and a loss per eval set: the trace records both, the loss per
// set can be plotted per byte and fitted, and a source the dataset lacks is refused before work.
TEST_F(Training, MixturesAndEvalSetsReachTheTraceThePlotAndTheFit) {
  const std::string mixture =
      "[train]\nsteps = 8\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n"
      "[eval]\nevery_steps = 4\ntokens = 256\nsets = [\"press\", \"fiction+romance\"]\n";
  const std::string flags =
      "--set 'data.mixture=[\"news=press+editorial+reviews\", \"learned\"]' "
      "--set 'data.weights=[0.7, 0.3]'";
  ASSERT_EQ(train(recipe("mixed", mixture), flags).status, 0);
  const std::string trace = run_dir("mixed") + "/trace.h5";
  for (const char* column : {"eval/loss_press", "eval/loss_fiction+romance",
                             "eval/bytes_per_token_press", "eval/bytes_per_token"}) {
    const auto v = series(trace, column);
    ASSERT_EQ(v.size(), 2u) << column;
    EXPECT_TRUE(std::isfinite(v[0]) && std::isfinite(v[1])) << column;
  }
  // The bytes tokenizer: a byte per token but for the end-of-document tokens.
  const double bpt = series(trace, "eval/bytes_per_token_press")[0];
  EXPECT_GT(bpt, 0.99);
  EXPECT_LE(bpt, 1.0);
  // Each set's loss is its own. The validation split begins with press (the corpus's first genre),
  // so the two agree on eval.tokens of it; fiction and romance are later in the split.
  EXPECT_EQ(series(trace, "eval/loss_press")[1], series(trace, "eval/loss")[1]);
  EXPECT_NE(series(trace, "eval/loss_fiction+romance")[1], series(trace, "eval/loss")[1]);
  {
    h5::File f = h5::File::open(trace, false);
    EXPECT_EQ(h5::attr_text(f, "/", "data_mixture"), "news=0.7 learned=0.3");
    EXPECT_EQ(h5::attr_text(f, "/", "eval_sets"), "press fiction+romance");
  }
  // Without the mixture the same recipe trains on other rows.
  ASSERT_EQ(train(recipe("unmixed", mixture), "--set 'eval.sets=[]'").status, 0);
  EXPECT_NE(series(trace, "train/loss")[0],
            series(run_dir("unmixed") + "/trace.h5", "train/loss")[0]);

  // ladder plot --eval SET --per-byte, ladder fit --eval SET.
  auto r = run_command(testing::ladder_binary() + " plot " + run_dir("mixed") +
                       " --eval press --per-byte --out " + dir_->path("mixplot/p.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string data = testing::read_file(dir_->path("mixplot/p.0.eval.dat"));
  EXPECT_EQ(std::count(data.begin(), data.end(), '\n'), 1 + 2) << data;
  EXPECT_NE(testing::read_file(dir_->path("mixplot/p.gp")).find("nats/byte"), std::string::npos);
  r = run_command(testing::ladder_binary() + " plot " + run_dir("mixed") + " --eval web");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("eval set web is not among"), std::string::npos) << r.output;
  r = run_command(testing::ladder_binary() + " fit " + run_dir("mixed") + " " + run_dir("unmixed") +
                  " --eval press --law kaplan-c --no-plots --out " + dir_->path("mixfit"));
  EXPECT_EQ(r.status, 2) << r.output;  // unmixed evaluated no sets: named, not skipped
  EXPECT_NE(r.output.find("has no eval set \"press\""), std::string::npos) << r.output;

  // A mixture of a domain and another dataset; one made with another tokenizer is refused.
  std::string text;
  for (int d = 0; d < 300; ++d)
    text += "Another dataset's document " + std::to_string(d) + ", of plain words.\n\n";
  testing::write_file(dir_->path("other.txt"), text);
  for (const std::string& tokenizer :
       {std::string("bytes"), "hf --tokenizer-file " + std::string(LADDER_SOURCE_DIR) +
                                  "/data/tokenizers/brown-bpe-4096.json"}) {
    const std::string out = dir_->path(tokenizer == "bytes" ? "other" : "other-bpe");
    const auto p =
        run_command(testing::ladder_binary() + " prep --input " + dir_->path("other.txt") +
                    " --out " + out + " --tokenizer " + tokenizer + " --val-fraction 0.1");
    ASSERT_EQ(p.status, 0) << p.output;
  }
  r = train(recipe("twosets", mixture),
            "--set 'data.mixture=[\"press\", \"other=" + dir_->path("other") +
                "\"]' --set 'data.weights=[1, 1]'");
  ASSERT_EQ(r.status, 0) << r.output;
  {
    h5::File f = h5::File::open(run_dir("twosets") + "/trace.h5", false);
    EXPECT_EQ(h5::attr_text(f, "/", "data_mixture"), "press=0.5 other=0.5");
  }
  r = train(recipe("badmix", mixture), "--set 'data.mixture=[\"press\", \"" +
                                           dir_->path("other-bpe") +
                                           "\"]' --set 'data.weights=[1, 1]'");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("was made with another tokenizer (hf-"), std::string::npos) << r.output;

  // Refused before any work: a domain the dataset lacks, a bad weight, a bad source.
  r = train(recipe("badmix", mixture),
            "--set 'data.mixture=[\"newz\"]' --set 'data.weights=[1.0]'");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("ladder: error: data.mixture: \"newz\": " + dir_->path("ds") +
                          ": has no domain \"newz\" (it has press, editorial"),
            std::string::npos)
      << r.output;
  // ladder train --check opens the sources too.
  r = train(recipe("badmix", mixture),
            "--check --set 'data.mixture=[\"newz\"]' --set 'data.weights=[1.0]'");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("has no domain \"newz\""), std::string::npos) << r.output;
  r = train(recipe("badmix", mixture),
            "--set 'data.mixture=[\"press\", \"learned\"]' --set 'data.weights=[1.0, -1.0]'");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("data.weights: must be >= 0; got -1.0"), std::string::npos) << r.output;
  r = train(recipe("badmix", mixture), "--set 'data.mixture=[\"press\"]' --set 'data.weights=[0]'");
  EXPECT_NE(r.output.find("data.weights: are all 0"), std::string::npos) << r.output;
  r = train(recipe("badmix", mixture), "--set 'eval.sets=[\"a b\"]'");
  EXPECT_NE(r.output.find("eval.sets: \"a b\": \"a b\" is not a domain name"), std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(run_dir("badmix") + "/trace.h5"));
}

TEST_F(Training, ReadableWithH5py) {
  // The Python of the project's virtual environment (launch/setup.sh), which holds h5py.
  ASSERT_EQ(train(recipe("py", kTrain12)).status, 0);
  const auto r = run_command(std::string(LADDER_PYTHON) + " " + std::string(LADDER_SOURCE_DIR) +
                             "/tests/trainer/read_run.py " + run_dir("py"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("train rows 12, eval rows 2, checkpoints [1, 2, 4, 6, 8, 12]"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("checkpoint step 12: 25 parameters, roles"), std::string::npos)
      << r.output;
}

TEST(Checkpoint, RoundTripsParametersMomentsAndMetadata) {
  models::ModelConfig c;
  c.arch = models::Arch::Dense, c.d_model = 16, c.n_layers = 2, c.n_heads = 2, c.n_kv_heads = 2;
  c.ffn_hidden = 32, c.norm_eps = 1e-5, c.rope_theta = 1e4;
  optim::OptimConfig oc{1e-3, 0.1, 0.9, 0.95, 1e-8, 1.0, 0};
  const optim::RuleInputs rules{.optim = oc};
  models::DenseTransformer a(c, 7, 8), b(c, 7, 8);
  optim::initialize(a.params(), optim::param_settings(a.params().all(), rules), 1);
  optim::initialize(b.params(), optim::param_settings(b.params().all(), rules), 2);
  optim::AdamW oa(a.params(), oc, optim::param_settings(a.params().all(), rules));
  optim::AdamW ob(b.params(), oc, optim::param_settings(b.params().all(), rules));
  a.loss(torch::randint(0, 7, {2, 8}), torch::randint(0, 7, {2, 8})).objective.backward();
  oa.step(1e-3);
  testing::TempDir dir;
  CheckpointMeta meta;
  meta.step = 1, meta.tokens = 16, meta.lr = 1e-3, meta.seed = 1, meta.recipe_toml = "x = 1";
  meta.arch = "dense";
  write_checkpoint(dir.path("c.h5"), a.params(), oa, meta);
  EXPECT_FALSE(fs::exists(dir.path("c.h5.tmp")));
  const CheckpointMeta back = read_checkpoint(dir.path("c.h5"), b.params(), ob);
  EXPECT_EQ(back.step, 1);
  EXPECT_EQ(back.tokens, 16);
  EXPECT_EQ(back.recipe_toml, "x = 1");
  EXPECT_EQ(ob.steps_taken(), 1);
  for (size_t i = 0; i < a.params().all().size(); ++i) {
    EXPECT_TRUE(torch::equal(a.params().all()[i].value, b.params().all()[i].value));
    EXPECT_TRUE(torch::equal(oa.exp_avg(i), ob.exp_avg(i)));
    EXPECT_TRUE(torch::equal(oa.exp_avg_sq(i), ob.exp_avg_sq(i)));
  }
  // An optimizer holding pieces (a ZeRO-1 shard) reads exactly its pieces of the moments.
  const int64_t numel = a.params().all()[1].value.numel();
  optim::AdamW piece(b.params(), oc, optim::param_settings(b.params().all(), rules),
                     {{1, 1, numel - 2}, {3, 5, 9}});
  read_checkpoint(dir.path("c.h5"), b.params(), piece);
  EXPECT_TRUE(torch::equal(piece.exp_avg(0), oa.exp_avg(1).narrow(0, 1, numel - 2)));
  EXPECT_TRUE(torch::equal(piece.exp_avg_sq(1), oa.exp_avg_sq(3).narrow(0, 5, 9)));
  // A model of another shape is refused with the parameter's name.
  models::ModelConfig wider = c;
  wider.d_model = 32, wider.ffn_hidden = 64;
  models::DenseTransformer w(wider, 7, 8);
  optim::AdamW ow(w.params(), oc, optim::param_settings(w.params().all(), rules));
  try {
    read_checkpoint(dir.path("c.h5"), w.params(), ow);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parameter embedding has shape [7, 16] but the recipe "
                                         "builds [7, 32]"),
              std::string::npos)
        << e.what();
  }
  // A damaged file is an error, not a crash.
  testing::write_file(dir.path("bad.h5"), "not hdf5");
  EXPECT_THROW(read_checkpoint(dir.path("bad.h5"), b.params(), ob), Error);
}

}  // namespace
}  // namespace ladder
