// Runs the `ladder` binary as a user would: exit codes and messages of the one error path, and the
// multi-rank start-up under mpirun.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace ladder {
namespace {

using testing::ladder_binary;
using testing::run_command;
using testing::TempDir;

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1))
    ++n;
  return n;
}

const char* kRecipe = R"([run]
name = "cli"
[model]
d_model = 64
n_layers = 2
n_heads = 2
[train]
steps = 10
global_batch = 8
micro_batch = 2
[schedule]
warmup = 2
)";

TEST(Cli, HelpListsSubcommandsAndExitsZero) {
  const auto r = run_command(ladder_binary() + " --help");
  EXPECT_EQ(r.status, 0) << r.output;
  for (const char* sub : {"prep", "train", "sweep", "fit", "coordcheck", "inspect"})
    EXPECT_NE(r.output.find(sub), std::string::npos) << sub;
  for (const char* sub : {"prep", "train", "sweep", "fit", "coordcheck", "inspect"}) {
    const auto h = run_command(ladder_binary() + " " + sub + " --help");
    EXPECT_EQ(h.status, 0) << sub << ": " << h.output;
  }
}

TEST(Cli, MissingOrUnknownSubcommandIsAnError) {
  auto r = run_command(ladder_binary());
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.output.rfind("ladder: error: ladder: ", 0), 0u) << r.output;
  r = run_command(ladder_binary() + " frobnicate");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.output.rfind("ladder: error: ladder: ", 0), 0u) << r.output;
}

TEST(Cli, UnknownFlagIsAnError) {
  const auto r = run_command(ladder_binary() + " prep --input x --out y --bogus");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.output.rfind("ladder: error: ladder prep: ", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("--bogus"), std::string::npos) << r.output;
}

TEST(Cli, CoordcheckRefusesBadWidthsBeforeAnyWork) {
  auto r = run_command(ladder_binary() + " coordcheck " + std::string(LADDER_SOURCE_DIR) +
                       "/recipes/coordcheck-mup.toml --widths 64");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.output, "ladder: error: --widths: needs at least two widths\n");
  // A width the heads do not divide: the recipe's own message, pointing at the width.
  r = run_command(ladder_binary() + " coordcheck " + std::string(LADDER_SOURCE_DIR) +
                  "/recipes/coordcheck-mup.toml --widths 64,100");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("ladder: error: --widths: width 100: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model.n_heads: the head dimension d_model / n_heads = 25 must be even"),
            std::string::npos)
      << r.output;
}

TEST(Cli, SweepOfAMissingFileIsAnError) {
  const auto r = run_command(ladder_binary() + " sweep /nonexistent/sweep.toml --dry-run");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.output, "ladder: error: /nonexistent/sweep.toml: no such sweep file\n");
}

// Points from the Chinchilla law (Hoffmann et al. 2022's fit), exactly: 6 sizes x 6 token counts.
std::string chinchilla_csv() {
  std::string csv = "N,D,loss\n";
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) {
      const double N = 1e7 * std::pow(10.0, i * 0.5), D = 1e9 * std::pow(10.0, j * 0.5);
      char row[96];
      std::snprintf(row, sizeof row, "%.17g,%.17g,%.17g\n", N, D,
                    1.69 + 406.4 / std::pow(N, 0.34) + 410.7 / std::pow(D, 0.28));
      csv += row;
    }
  return csv;
}

TEST(Cli, FitWritesTheLawsParametersDeterministically) {
  TempDir dir;
  testing::write_file(dir.path("points.csv"), chinchilla_csv());
  const std::string fit =
      ladder_binary() + " fit " + dir.path("points.csv") + " --bootstrap 20 --holdout 1 --out ";
  const auto a = run_command(fit + dir.path("a"));
  ASSERT_EQ(a.status, 0) << a.output;
  EXPECT_NE(a.output.find("compute-optimal allocation"), std::string::npos) << a.output;
  EXPECT_NE(a.output.find("holdout: the 1 largest model size (6 points)"), std::string::npos);
  const std::string json = testing::read_file(dir.path("a/fit.json"));
  for (const char* key :
       {"\"E\"", "\"A\"", "\"B\"", "\"alpha\"", "\"beta\"", "\"ci95\"", "\"allocation\"",
        "\"tokens_per_parameter\"", "\"mean_abs_rel_error\"", "\"huber_delta\": 0.001"})
    EXPECT_NE(json.find(key), std::string::npos) << key;
  const auto b = run_command(fit + dir.path("b"));
  ASSERT_EQ(b.status, 0) << b.output;
  EXPECT_EQ(json, testing::read_file(dir.path("b/fit.json")));  // same input, same bytes
  if (run_command("command -v gnuplot").status == 0) {
    EXPECT_TRUE(std::filesystem::exists(dir.path("a/loss_vs_compute.png")));
    EXPECT_TRUE(std::filesystem::exists(dir.path("a/residuals.png")));
    EXPECT_TRUE(std::filesystem::exists(dir.path("a/points.dat")));
  }
}

// The ParScale fit's own figure: every point at N (k ln P + 1) with the fitted k falls on the one
// curve E + (A 1e9 / N_eff)^alpha when the points follow the law.
TEST(Cli, FitParscalePlotsLossAgainstEffectiveParameters) {
  if (run_command("command -v gnuplot").status != 0) GTEST_SKIP() << "gnuplot is not installed";
  TempDir dir;
  const double E = 1.5, A = 0.2, alpha = 0.3, k = 0.4;
  std::string csv = "N,D,P,loss\n";
  for (double N : {1e5, 3e5, 1e6, 3e6})
    for (int P : {1, 2, 4, 8}) {
      char row[128];
      std::snprintf(row, sizeof row, "%.17g,1e7,%d,%.17g\n", N, P,
                    E + std::pow(A * 1e9 / (N * (k * std::log(P) + 1)), alpha));
      csv += row;
    }
  testing::write_file(dir.path("points.csv"), csv);
  const auto r = run_command(ladder_binary() + " fit " + dir.path("points.csv") +
                             " --law parscale --out " + dir.path("fit"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir.path("fit/loss_vs_effective_params.png")));
  std::istringstream data(testing::read_file(dir.path("fit/effective.dat")));
  int points = 0, blocks = 0;
  bool in_block = false;
  for (std::string line; std::getline(data, line);) {
    if (line.empty() || line[0] == '#') {
      in_block = false;
      continue;
    }
    if (!in_block) ++blocks, in_block = true;
    double n_eff = 0, loss = 0;
    std::istringstream(line) >> n_eff >> loss;
    EXPECT_NEAR(loss, E + std::pow(A * 1e9 / n_eff, alpha), 1e-3 * loss) << line;
    ++points;
  }
  EXPECT_EQ(points, 16);
  EXPECT_EQ(blocks, 4);  // one per P
}

TEST(Cli, FitIsoflopAndLearningRateTransferWithIntervals) {
  TempDir dir;
  // isoFLOP points: 4 budgets x 7 sizes on N D = C / 6, from the Chinchilla law.
  std::string iso = "N,D,C,loss\n", lr = "width,lr,loss,run\n";
  for (double C : {1e18, 1e19, 1e20, 1e21})
    for (int i = -3; i <= 3; ++i) {
      const double centre = 0.29 * std::pow(C / 6, 0.4516), N = centre * std::pow(1.6, i);
      const double D = C / 6 / N;
      char row[128];
      std::snprintf(row, sizeof row, "%.10g,%.10g,%.10g,%.10g\n", N, D, C,
                    1.69 + 406.4 / std::pow(N, 0.34) + 410.7 / std::pow(D, 0.28));
      iso += row;
    }
  for (int width : {128, 256})
    for (int i = -3; i <= 3; ++i) {
      const double best = width == 128 ? 0.01 : 0.012, rate = best * std::pow(2.0, i);
      char row[128];
      std::snprintf(row, sizeof row, "%d,%.10g,%.10g,w%d_%d\n", width, rate,
                    3 + 0.05 * std::pow(std::log(rate / best), 2), width, i);
      lr += row;
    }
  testing::write_file(dir.path("iso.csv"), iso);
  testing::write_file(dir.path("lr.csv"), lr);
  const auto a = run_command(ladder_binary() + " fit " + dir.path("iso.csv") +
                             " --law isoflop --bootstrap 20 --out " + dir.path("iso"));
  ASSERT_EQ(a.status, 0) << a.output;
  EXPECT_NE(a.output.find("4 budgets with a minimum inside their model sizes"), std::string::npos)
      << a.output;
  const std::string iso_json = testing::read_file(dir.path("iso/fit.json"));
  for (const char* key : {"\"law\": \"isoflop\"", "\"a\"", "\"b\"", "\"ci95\"", "\"budgets\""})
    EXPECT_NE(iso_json.find(key), std::string::npos) << key;
  const auto b = run_command(ladder_binary() + " fit " + dir.path("lr.csv") +
                             " --lr-transfer --bootstrap 20 --out " + dir.path("lr"));
  ASSERT_EQ(b.status, 0) << b.output;
  EXPECT_NE(b.output.find("spread of the optimal learning rate across widths: 1.2x"),
            std::string::npos)
      << b.output;
  const std::string lr_json = testing::read_file(dir.path("lr/fit.json"));
  for (const char* key : {"\"lr_transfer\"", "\"lr_opt\"", "\"lr_opt_ci95\"", "\"spread_ci95\""})
    EXPECT_NE(lr_json.find(key), std::string::npos) << key;
  if (run_command("command -v gnuplot").status == 0) {
    EXPECT_TRUE(std::filesystem::exists(dir.path("iso/isoflop.png")));
    EXPECT_TRUE(std::filesystem::exists(dir.path("lr/lr_transfer.png")));
  }
}

TEST(Cli, FitMistakesAreOneLineAndExitTwo) {
  TempDir dir;
  testing::write_file(dir.path("points.csv"), chinchilla_csv());
  testing::write_file(dir.path("nod.csv"), "N,loss\n1e8,3\n2e8,2.9\n");
  const std::string fit = ladder_binary() + " fit --no-plots --out " + dir.path("o") + " ";
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {dir.path("points.csv") + " --law chinchila",
            "ladder: error: --law chinchila: unknown law; known: chinchilla, parscale"},
           {dir.path("missing.csv"),
            "ladder: error: " + dir.path("missing.csv") + ": no such file or folder"},
           {dir.path("nod.csv"), "law chinchilla needs D > 0 for every point"},
           {dir.path("points.csv") + " --holdout 6",
            "ladder: error: --holdout 6: the points have only 6 model sizes"},
           {dir.path("points.csv") + " --filter arch=moe",
            "ladder: error: ladder fit: no points left after reading and filtering"},
           {dir.path("points.csv") + " --along depth",
            "ladder: error: --along depth: goes with --lr-transfer or --wd-transfer"},
           {dir.path("points.csv") + " --lr-transfer --along heads",
            "ladder: error: --along heads: the axis of a transfer is width or depth"}}) {
    const auto r = run_command(fit + args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_EQ(count(r.output, "\n"), 1u) << r.output;
  }
}

TEST(Cli, TrainCheckPrintsTheResolvedRecipe) {
  TempDir dir;
  testing::write_file(dir.path("r.toml"), kRecipe);
  const auto r = run_command(ladder_binary() + " train " + dir.path("r.toml") +
                             " --check --set optim.lr=1e-3");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("[optim]\nlr = 0.001\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("dp = 0  # derived: 1"), std::string::npos) << r.output;
}

TEST(Cli, TrainCheckResolvesThreadsAndPrecision) {
  TempDir dir;
  testing::write_file(dir.path("r.toml"), kRecipe);
  auto r = run_command(ladder_binary() + " train " + dir.path("r.toml") + " --check");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex("\nprecision = \"auto\"  # derived: "
                                                     "\"(fp32|bf16)\"\ndevice = \"cpu\"\n"
                                                     "threads = 0  # derived: [1-9][0-9]*\n")))
      << r.output;
  // Given explicitly, they are printed as given; --threads N is --set train.threads=N.
  r = run_command(ladder_binary() + " train " + dir.path("r.toml") +
                  " --check --threads 3 --set train.precision=bf16");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("precision = \"bf16\"\ndevice = \"cpu\"\nthreads = 3\n"),
            std::string::npos)
      << r.output;
  r = run_command(ladder_binary() + " train " + dir.path("r.toml") +
                  " --check --set train.precision=fp16");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("train.precision"), std::string::npos) << r.output;
}

// A dataset of a few thousand bytes tokens in dir/ds (for train commands that need one).
void prep_small_dataset(const TempDir& dir) {
  std::string text;
  for (int i = 0; i < 300; ++i)
    text += "sentence " + std::to_string(i) + " of a small corpus\n\n";
  testing::write_file(dir.path("corpus.txt"), text);
  const auto r = run_command(ladder_binary() + " prep --input " + dir.path("corpus.txt") +
                             " --out " + dir.path("ds") + " --val-fraction 0.5");
  ASSERT_EQ(r.status, 0) << r.output;
}

TEST(Cli, TrainCheckEstimatesMemoryAndRefusesARunThatCannotFit) {
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(prep_small_dataset(dir));
  testing::write_file(dir.path("r.toml"), kRecipe);
  const std::string data = " --set data.path=" + dir.path("ds") + " --set eval.every_steps=0";
  auto r = run_command(ladder_binary() + " train " + dir.path("r.toml") + " --check" + data);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(
      std::regex_search(r.output, std::regex("# memory per rank \\(estimate\\): parameters .* \\+ "
                                             "gradients .* \\+ AdamW .* \\+ activations 1 x .* = "
                                             ".*B; .*B available per rank\n")))
      << r.output;
  // Without the dataset (its vocabulary) there is no estimate yet, and no error.
  r = run_command(ladder_binary() + " train " + dir.path("r.toml") + " --check");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("# memory per rank: estimated once data.path holds a dataset"),
            std::string::npos)
      << r.output;
  // Tens of terabytes per rank: refused by --check, and by train before any work (no run folder),
  // with the estimate instead of LibTorch's allocation failure.
  const std::string huge =
      data + " --set model.d_model=16384 --set model.n_layers=256 --set model.n_heads=128";
  r = run_command(ladder_binary() + " train " + dir.path("r.toml") + " --check" + huge);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("the run cannot fit"), std::string::npos) << r.output;
  r = run_command(ladder_binary() + " train " + dir.path("r.toml") + huge +
                  " --set run.out_dir=" + dir.path("runs"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("ladder: error: train: memory per rank (estimate)"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("the run cannot fit"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.path("runs")));
}

TEST(Cli, AnOutputPathThatIsAFileIsOneLineAndExitTwo) {
  TempDir dir;
  testing::write_file(dir.path("file"), "not a folder\n");
  testing::write_file(dir.path("c.txt"), "text\n\nmore text\n\n");
  auto r = run_command(ladder_binary() + " prep --input " + dir.path("c.txt") + " --out " +
                       dir.path("file"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_EQ(r.output, "ladder: error: " + dir.path("file") + ": is a file, not a folder\n");
  r = run_command(ladder_binary() + " prep --input " + dir.path("c.txt") + " --out " +
                  dir.path("file/ds"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_EQ(r.output, "ladder: error: " + dir.path("file/ds") +
                          ": cannot be a folder: " + dir.path("file") + " is a file\n");
  ASSERT_NO_FATAL_FAILURE(prep_small_dataset(dir));
  testing::write_file(dir.path("r.toml"), kRecipe);
  r = run_command(ladder_binary() + " train " + dir.path("r.toml") +
                  " --set data.path=" + dir.path("ds") +
                  " --set eval.every_steps=0 --set run.out_dir=" + dir.path("file"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("is a file"), std::string::npos) << r.output;
}

TEST(Cli, BadRecipeIsOneLineAndExitTwo) {
  TempDir dir;
  testing::write_file(dir.path("r.toml"), std::string(kRecipe) + "[optim]\nlr = -1\n");
  const auto r = run_command(ladder_binary() + " train " + dir.path("r.toml") + " --check");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.output,
            "ladder: error: " + dir.path("r.toml") + ":14: optim.lr: must be > 0.0; got -1.0\n");
}

TEST(Cli, PrepWritesADatasetAndReportsIt) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 100; ++i)
    text += "sentence " + std::to_string(i) + "\n\n";
  testing::write_file(dir.path("c.txt"), text);
  auto r = run_command(ladder_binary() + " prep --input " + dir.path("c.txt") + " --out " +
                       dir.path("ds") + " --val-fraction 0.1");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("tokens/s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bytes/token"), std::string::npos) << r.output;
  r = run_command(ladder_binary() + " prep --input " + dir.path("missing.txt") + " --out " +
                  dir.path("ds2"));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.output, "ladder: error: " + dir.path("missing.txt") + ": no such file or folder\n");
}

TEST(CliMpi, TwoRanksDeriveDataParallelism) {
  TempDir dir;
  testing::write_file(dir.path("r.toml"), kRecipe);
  const auto r = run_command(testing::mpirun(2) + " " + ladder_binary() + " train " +
                             dir.path("r.toml") + " --check");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(count(r.output, "dp = 0  # derived: 2"), 1u) << r.output;  // rank 0 prints it
  // The node's cores are shared between the two ranks on it: at most half each (fewer where mpirun
  // binds each rank to fewer cores), at least one.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex("\nthreads = 0  # derived: ([0-9]+)\n")))
      << r.output;
  const int threads = std::stoi(m[1].str());
  EXPECT_GE(threads, 1);
  EXPECT_LE(threads, std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / 2));
}

TEST(CliMpi, HeadsThatTpCannotSplitEndEveryRankWithOneMessage) {
  TempDir dir;
  testing::write_file(dir.path("r.toml"), kRecipe);  // 2 heads
  const auto r = run_command(testing::mpirun(4) + " " + ladder_binary() + " train " +
                             dir.path("r.toml") + " --check --set parallel.tp=4");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_EQ(count(r.output,
                  "parallel.tp: must divide model.n_heads (2) and model.n_kv_heads (2); "
                  "got 4"),
            1u)
      << r.output;
}

TEST(CliMpi, CudaWithoutAGpuEndsEveryRankWithOneMessage) {
  if (std::system("nvidia-smi -L > /dev/null 2>&1") == 0) GTEST_SKIP() << "this machine has a GPU";
  TempDir dir;
  testing::write_file(dir.path("r.toml"), kRecipe);
  const auto r = run_command(testing::mpirun(2) + " " + ladder_binary() + " train " +
                             dir.path("r.toml") + " --check --set train.device=cuda");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_EQ(count(r.output, "ladder: error: train.device = \"cuda\": no CUDA device is visible"),
            1u)
      << r.output;
}

TEST(CliMpi, WorldSizeMismatchEndsEveryRankWithOneMessage) {
  TempDir dir;
  testing::write_file(dir.path("r.toml"), kRecipe);
  for (int ranks : {2, 4}) {
    const auto r = run_command(testing::mpirun(ranks) + " " + ladder_binary() + " train " +
                               dir.path("r.toml") + " --check --set parallel.dp=3");
    EXPECT_EQ(r.status, 2) << r.output;
    const std::string message =
        "ladder: error: --set parallel.dp=3: parallel.dp: tp x pp x dp x "
        "islands = 1 x 1 x 3 x 1 = 3, but the job has " +
        std::to_string(ranks) + " ranks";
    EXPECT_EQ(count(r.output, message), 1u) << r.output;
  }
}

}  // namespace
}  // namespace ladder

namespace ladder {
namespace {

// A rank that throws ends the whole job: non-zero status, its message, well within 30 s.
TEST(CliMpi, ARankThatThrowsEndsTheJob) {
  const auto start = std::chrono::steady_clock::now();
  const auto r =
      testing::run_command("timeout 60 " + testing::mpirun(2) + " " + LADDER_FAULT_JOB + " throw");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.status, 124) << "timed out: the job hung\n" << r.output;
  EXPECT_NE(r.output.find("ladder: error: rank 1 failed on purpose [rank 1]"), std::string::npos)
      << r.output;
  EXPECT_LT(seconds, 30);
}

// A collective that never completes names itself and aborts after the timeout (2 s here).
TEST(CliMpi, AStalledCollectiveNamesItselfAndAborts) {
  const auto r =
      testing::run_command("timeout 60 " + testing::mpirun(2) + " " + LADDER_FAULT_JOB + " stall");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.status, 124) << "timed out: the job hung\n" << r.output;
  EXPECT_NE(r.output.find("ladder: error: all_reduce on group world (world ranks 0,1) stalled for "
                          "more than 2 s; aborting the job [rank 0]"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace ladder
