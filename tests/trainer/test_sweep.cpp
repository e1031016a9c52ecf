// Sweep files without training: expressions, expansion of grids, zips and derived values, run
// names, strict validation (file, line and run in every message), run-folder checks, the index.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/hdf5.h"
#include "data/dataset.h"
#include "models/model.h"
#include "test_util.h"
#include "trainer/recipe/expression.h"
#include "trainer/sweep/sweep.h"
#include "trainer/sweep/sweep_index.h"

namespace ladder {
namespace {

namespace fs = std::filesystem;

double eval(const std::string& text) {
  return evaluate_expression(
      text,
      [](const std::string& name) -> double {
        if (name == "d_model") return 256;
        if (name == "model.n_layers") return 4;
        throw Error("lookup", "unknown name " + name);
      },
      "test");
}

std::string expression_error(const std::string& text) {
  try {
    eval(text);
  } catch (const Error& e) {
    return format_error(e);
  }
  return "";
}

TEST(Expression, FollowsPrecedenceAndFunctions) {
  EXPECT_DOUBLE_EQ(eval("d_model / 64"), 4);
  EXPECT_DOUBLE_EQ(eval("1 + 2 * 3"), 7);
  EXPECT_DOUBLE_EQ(eval("(1 + 2) * 3"), 9);
  EXPECT_DOUBLE_EQ(eval("2 ^ 3 ^ 2"), 512);  // right-associative
  EXPECT_DOUBLE_EQ(eval("-2 ^ 2"), -4);
  EXPECT_DOUBLE_EQ(eval("10 - 4 - 3"), 3);  // left-associative
  EXPECT_DOUBLE_EQ(eval("3e-3 * 256 / d_model"), 3e-3);
  EXPECT_DOUBLE_EQ(eval("sqrt(16) + log2(8) + min(3, 1, 2) + max(1, 5) + round(2.5)"), 16);
  EXPECT_DOUBLE_EQ(eval("floor(7 / 2) + ceil(0.1) + abs(-2) + pow(2, 10)"), 1030);
  EXPECT_DOUBLE_EQ(eval("model.n_layers * 2"), 8);
  EXPECT_NEAR(eval("exp(log(5))"), 5, 1e-12);
}

TEST(Expression, RefusesMalformedInput) {
  EXPECT_EQ(expression_error("1 / 0"), "ladder: error: test: \"1 / 0\": division by zero");
  EXPECT_EQ(expression_error("(1 + 2"),
            "ladder: error: test: \"(1 + 2\": missing ')' at position 7");
  EXPECT_EQ(expression_error("2 +"), "ladder: error: test: \"2 +\": the expression ends early");
  EXPECT_EQ(expression_error("2 3"), "ladder: error: test: \"2 3\": unexpected '3' at position 3");
  EXPECT_EQ(expression_error("width * 2"), "ladder: error: lookup: unknown name width");
  EXPECT_NE(expression_error("sin(1)").find("unknown function sin()"), std::string::npos);
  EXPECT_NE(expression_error("sqrt(1, 2)").find("sqrt() takes 1 argument, got 2"),
            std::string::npos);
  EXPECT_NE(expression_error("log(0)").find("log() of a value <= 0"), std::string::npos);
}

// A folder with a base recipe over a dataset of the bytes tokenizer (its metadata is all a plan
// reads), and sweep files beside it.
class SweepFile : public ::testing::Test {
 protected:
  void SetUp() override {
    data::DatasetMeta meta;
    meta.tokenizer_kind = "bytes", meta.tokenizer_identity = "bytes";
    meta.vocab_size = 257, meta.eod_id = 256;
    meta.train.shards = {"train_000000.bin"}, meta.val.shards = {"val_000000.bin"};
    fs::create_directories(dir.path("ds"));
    meta.write(dir.path("ds"));
    testing::write_file(dir.path("base.toml"),
                        "[run]\nname = \"base\"\n[data]\npath = \"" + dir.path("ds") +
                            "\"\nseq_len = 64\n[model]\nd_model = 64\n"
                            "n_layers = 2\nn_heads = 2\n[train]\nsteps = "
                            "100\nglobal_batch = 8\nmicro_batch = 8\n[schedule]\nwarmup = 10\n");
  }

  std::string sweep_file(const std::string& body, const std::string& head = "") {
    const std::string path = dir.path("s.toml");
    testing::write_file(path, "[sweep]\nname = \"s\"\nrecipe = \"base.toml\"\nout_dir = \"" +
                                  dir.path("runs") + "\"\n" + head + body);
    return path;
  }

  std::string error_of(const std::string& body, const std::string& head = "") {
    try {
      load_sweep(sweep_file(body, head));
    } catch (const Error& e) {
      return format_error(e);
    }
    return "";
  }

  testing::TempDir dir;
};

std::vector<std::string> names(const Sweep& s) {
  std::vector<std::string> out;
  for (const auto& r : s.runs)
    out.push_back(r.name);
  return out;
}

TEST_F(SweepFile, GridIsCartesianInFileOrderLastAxisFastest) {
  const Sweep s = load_sweep(sweep_file(
      "[grid]\nmodel.d_model = [64, 128]\noptim.lr = [1e-3, 3e-3, 0.01]\n[set]\nrun.seed = 7\n"));
  EXPECT_EQ(names(s), (std::vector<std::string>{"d_model=64_lr=0.001", "d_model=64_lr=0.003",
                                                "d_model=64_lr=0.01", "d_model=128_lr=0.001",
                                                "d_model=128_lr=0.003", "d_model=128_lr=0.01"}));
  EXPECT_EQ(s.varied_keys, (std::vector<std::string>{"model.d_model", "optim.lr"}));
  EXPECT_EQ(s.runs[4].recipe.model.d_model, 128);
  EXPECT_DOUBLE_EQ(s.runs[4].recipe.optim.lr, 3e-3);
  EXPECT_EQ(s.runs[4].recipe.run.seed, 7);  // [set] applies to every run
  EXPECT_EQ(s.runs[4].recipe.run.name, "d_model=128_lr=0.003");
  EXPECT_EQ(s.runs[4].recipe.run.out_dir, dir.path("runs") + "/s");
  EXPECT_EQ(s.runs[4].dir, dir.path("runs") + "/s/d_model=128_lr=0.003");
}

TEST_F(SweepFile, ZipAdvancesTogetherAndNamesByItsFirstDistinctKey) {
  const Sweep s =
      load_sweep(sweep_file("[[zip]]\nmodel.d_model = [64, 128, 256]\nmodel.n_layers = [2, 4, 4]\n"
                            "[grid]\ntrain.steps = [20, 30]\n"));
  ASSERT_EQ(s.runs.size(), 6u);
  EXPECT_EQ(s.runs[0].name, "d_model=64_steps=20");
  EXPECT_EQ(s.runs[5].name, "d_model=256_steps=30");
  EXPECT_EQ(s.runs[2].recipe.model.n_layers, 4);
  EXPECT_EQ(s.runs[2].recipe.model.d_model, 128);
  EXPECT_EQ(s.runs[0].recipe.model.n_layers, 2);
  EXPECT_EQ(s.varied_keys,
            (std::vector<std::string>{"model.d_model", "model.n_layers", "train.steps"}));
}

TEST_F(SweepFile, AZipOfTuplesIsNamedByEveryKeyThatVaries) {
  // No single key tells the parametrizations apart, their tuples do: (sp, 0), (mup, 0), (mup, 1).
  const Sweep s =
      load_sweep(sweep_file("[[zip]]\nmup.parametrization = [\"sp\", \"mup\", \"mup\"]\n"
                            "mup.base_depth = [0, 0, 2]\nmup.depth_alpha = [0, 0, 1]\n"
                            "[grid]\nmodel.n_layers = [2, 4]\n"));
  ASSERT_EQ(s.runs.size(), 6u);
  EXPECT_EQ(s.runs[0].name, "parametrization=sp_base_depth=0_depth_alpha=0_n_layers=2");
  EXPECT_EQ(s.runs[3].name, "parametrization=mup_base_depth=0_depth_alpha=0_n_layers=4");
  EXPECT_EQ(s.runs[5].name, "parametrization=mup_base_depth=2_depth_alpha=1_n_layers=4");
  EXPECT_DOUBLE_EQ(s.runs[5].recipe.mup.depth_alpha, 1.0);
  EXPECT_EQ(s.runs[5].recipe.mup.base_depth, 2);
  // Entries equal in every key would run twice.
  EXPECT_EQ(error_of("[[zip]]\nmodel.d_model = [64, 128, 64]\nmodel.n_layers = [2, 4, 2]\n"),
            "ladder: error: " + dir.path("s.toml") +
                ":6: [[zip]]: entries 1 and 3 are the same in every key, so their runs would "
                "repeat");
}

TEST_F(SweepFile, DerivedValuesReadKeysAndTheModelSize) {
  const Sweep s = load_sweep(sweep_file(
      "[grid]\nmodel.d_model = [64, 128]\n"
      "[derive]\nmodel.n_heads = \"d_model / 32\"\noptim.lr = \"3e-3 * 64 / model.d_model\"\n"
      "train.tokens = \"20 * N\"\n"));
  ASSERT_EQ(s.runs.size(), 2u);
  for (const auto& run : s.runs) {
    const auto& r = run.recipe;
    EXPECT_EQ(r.model.n_heads, r.model.d_model / 32);
    EXPECT_DOUBLE_EQ(r.optim.lr, 3e-3 * 64 / static_cast<double>(r.model.d_model));
    // 20 N tokens, N counted on the model as it is after n_heads was derived; the run rounds
    // its steps up to whole batches (train.steps was given by the base and gives way).
    const auto size = models::size_accounting(r.model, 257, 64);
    EXPECT_EQ(run.size.non_embedding_params, size.non_embedding_params);
    EXPECT_EQ(run.values.at("train.tokens"), std::to_string(20 * size.non_embedding_params));
    EXPECT_EQ(r.train.steps, (20 * size.non_embedding_params + 8 * 64 - 1) / (8 * 64));
    EXPECT_DOUBLE_EQ(run.flops, size.flops_per_token * static_cast<double>(r.train.tokens));
  }
  EXPECT_EQ(s.derived_keys,
            (std::vector<std::string>{"model.n_heads", "optim.lr", "train.tokens"}));
}

TEST_F(SweepFile, SweepVariablesMakeIsoFlopGrids) {
  // A compute budget as an axis: each model trains on C / (FLOPs per token) tokens.
  const Sweep s =
      load_sweep(sweep_file("[grid]\nbudget = [1e12, 2.5e12]\nmodel.d_model = [64, 128]\n"
                            "[derive]\ntrain.tokens = \"round(budget / flops_per_token)\"\nratio = "
                            "\"train.tokens / N\"\n"));
  EXPECT_EQ(names(s),
            (std::vector<std::string>{"budget=1e12_d_model=64", "budget=1e12_d_model=128",
                                      "budget=2.5e12_d_model=64", "budget=2.5e12_d_model=128"}));
  EXPECT_EQ(s.varied_keys, (std::vector<std::string>{"budget", "model.d_model"}));
  for (const auto& run : s.runs) {
    const double C = std::stod(run.values.at("budget"));
    EXPECT_EQ(run.recipe.train.tokens % (8 * 64), 0);  // rounded up to whole steps
    EXPECT_NEAR(std::stod(run.values.at("train.tokens")), C / run.size.flops_per_token, 0.5);
    EXPECT_NEAR(std::stod(run.values.at("ratio")),
                std::stod(run.values.at("train.tokens")) / run.size.non_embedding_params, 1e-9);
    for (const auto& o : run.overrides)  // variables are no recipe keys
      EXPECT_NE(o.key, "budget");
  }
  // The index holds the variable as a column.
  write_index(s, std::vector<RunState>(s.runs.size()));
  h5::File f = h5::File::open(s.dir + "/index.h5", false);
  EXPECT_EQ(h5::read_tensor(f, "runs/budget")[2].item<double>(), 2.5e12);
  EXPECT_NE(error_of("[grid]\nC = [1, 2]\n").find(":6: C: names a column of the sweep index"),
            std::string::npos);
  EXPECT_NE(
      error_of("[grid]\nlr = [1, 2]\n")
          .find(":6: lr: a sweep variable cannot share its name with the recipe key optim.lr"),
      std::string::npos);
  EXPECT_NE(error_of("[grid]\nN = [1, 2]\n").find(":6: N: names the model's size"),
            std::string::npos);
  EXPECT_NE(error_of("[grid]\nbudget = [\"big\"]\n").find("budget: a sweep variable is a number"),
            std::string::npos);
}

TEST_F(SweepFile, NamesAreStableAcrossExpansionsAndTemplatesWork) {
  const std::string body = "[grid]\noptim.lr = [0.001, 0.002]\nmodel.d_model = [64, 128]\n";
  const Sweep a = load_sweep(sweep_file(body)), b = load_sweep(sweep_file(body));
  EXPECT_EQ(names(a), names(b));
  for (size_t i = 0; i < a.runs.size(); ++i)
    EXPECT_EQ(a.runs[i].set_arguments(), b.runs[i].set_arguments());
  const Sweep t = load_sweep(sweep_file(body, "run_name = \"w{d_model}-lr{optim.lr}-N{N}\"\n"));
  EXPECT_EQ(t.runs[0].name, "w64-lr0.001-N" + std::to_string(t.runs[0].size.non_embedding_params));
  EXPECT_NE(error_of(body, "run_name = \"w{d_model}\"\n").find("are both named \"w64\""),
            std::string::npos);
}

TEST_F(SweepFile, MistakesNameTheFileTheLineAndTheRun) {
  const std::string s = dir.path("s.toml");
  // Line 5 is the first line of the body.
  EXPECT_EQ(error_of("[grid]\nmodel.d_modle = [64]\n"),
            "ladder: error: " + s +
                ":6: model.d_modle: not a recipe key (recipes/README.md lists every key)");
  EXPECT_EQ(error_of("[grid]\nmodel.d_model = [64, 96, 99]\n"),
            "ladder: error: " + s +
                ":6: run 3/3 (d_model=99): model.d_model: must be divisible by model.n_heads (2); "
                "got 99");
  EXPECT_EQ(
      error_of("[grid]\nmodel.d_model = [64, 96]\n[derive]\nmodel.n_heads = \"d_model / 64\"\n"),
      "ladder: error: " + s +
          ":8: run 2/2 (d_model=96): model.n_heads = \"d_model / 64\" gives 1.5, but "
          "model.n_heads is an integer (wrap the expression in round(), floor() or ceil())");
  EXPECT_EQ(error_of("[[zip]]\nmodel.d_model = [64, 128]\nmodel.n_layers = [2]\n"),
            "ladder: error: " + s +
                ":7: model.n_layers: zipped lists must be equally long; model.n_layers has 1 "
                "values, model.d_model has 2");
  EXPECT_EQ(error_of("[grid]\noptim.lr = [0.1, 0.1]\n"),
            "ladder: error: " + s + ":6: optim.lr: a value repeats; each run would run twice");
  EXPECT_EQ(error_of("[grid]\noptim.lr = [0.1]\n[derive]\noptim.lr = \"0.2\"\n"),
            "ladder: error: " + s + ":8: optim.lr: already given at " + s + ":6");
  EXPECT_EQ(error_of("[grid]\nmodel.d_model = [64]\n[derive]\nmodel.n_heads = \"width / 64\"\n"),
            "ladder: error: " + s +
                ":8: run 1/1 (run): \"width / 64\": unknown name width (recipe keys as "
                "section.key or by a unique short name, sweep variables given before, or N, "
                "N_total, N_active, flops_per_token, vocab)");
  EXPECT_NE(error_of("[derive]\ntrain.tokens = \"every_steps * 2\"\n")
                .find("every_steps names keys of several sections; write section.every_steps"),
            std::string::npos);
  EXPECT_NE(
      error_of("[grid]\noptim.lr = 0.1\n").find(":6: optim.lr: a grid axis is a non-empty list"),
      std::string::npos);
  EXPECT_NE(error_of("[gird]\n").find(":5: gird: unknown section"), std::string::npos);
  EXPECT_NE(error_of("[grid]\nrun.name = [\"a\", \"b\"]\n").find("run.name: set by the sweep"),
            std::string::npos);
  EXPECT_NE(error_of("", "launch = \"slurm\"\n").find("sweep.launch: must be inprocess or mpirun"),
            std::string::npos);
  EXPECT_NE(error_of("", "ranks = 2\nlaunch = \"inprocess\"\n")
                .find("sweep.ranks: runs of several ranks need sweep.launch = \"mpirun\""),
            std::string::npos);
  EXPECT_NE(error_of("", "colour = 1\n").find("sweep.colour: unknown key"), std::string::npos);
  // A value of the wrong type for its key, from a [set] line.
  EXPECT_NE(error_of("[set]\nmodel.d_model = \"wide\"\n")
                .find(":6: run 1/1 (run): model.d_model: expected an integer"),
            std::string::npos);
}

TEST_F(SweepFile, RunsValidateForTheSweepsRanks) {
  // tp = 2 needs two ranks: the sweep's, not this process's.
  EXPECT_NE(error_of("[set]\nparallel.tp = 2\n").find("does not divide the world size 1"),
            std::string::npos);
  const Sweep s = load_sweep(sweep_file("[set]\nparallel.tp = 2\ntrain.micro_batch = 4\n",
                                        "ranks = 4\nlaunch = \"mpirun\"\n"));
  EXPECT_EQ(s.runs[0].recipe.parallel.dp, 2);
}

TEST_F(SweepFile, RefusesARunFolderOfAnotherRecipe) {
  const std::string body = "[grid]\noptim.lr = [0.001, 0.002]\n";
  Sweep s = load_sweep(sweep_file(body));
  fs::create_directories(s.runs[0].dir);
  testing::write_file(s.runs[0].dir + "/recipe.toml", resolved_recipe_toml(s.runs[0].recipe));
  EXPECT_NO_THROW(check_run_folder(s.runs[0]));
  testing::write_file(s.runs[1].dir + "/recipe.toml", resolved_recipe_toml(s.runs[0].recipe));
  try {
    check_run_folder(s.runs[1]);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(format_error(e).find("holds a run of another recipe (optim.lr = 0.001 there, 0.002 "
                                   "in the sweep)"),
              std::string::npos)
        << format_error(e);
  }
  // A run written before a key existed ran as its default: the same recipe when the sweep keeps the
  // default, another one when it does not.
  auto without = [](std::string text, const std::string& line) {
    return text.erase(text.find(line), line.size());
  };
  testing::write_file(
      s.runs[0].dir + "/recipe.toml",
      without(resolved_recipe_toml(s.runs[0].recipe), "spectra_every_steps = 100\n"));
  EXPECT_NO_THROW(check_run_folder(s.runs[0]));
  testing::write_file(s.runs[0].dir + "/recipe.toml",
                      without(resolved_recipe_toml(s.runs[0].recipe), "lr = 0.001\n"));
  EXPECT_THROW(check_run_folder(s.runs[0]), Error);
}

TEST_F(SweepFile, StateAndIndexFollowTheRunFolders) {
  Sweep s = load_sweep(sweep_file("[grid]\noptim.lr = [0.001, 0.002, 0.003]\n"));
  // Run 1: done (a checkpoint at its last step); run 2: failed; run 3: nothing yet.
  fs::create_directories(s.runs[0].dir + "/checkpoints");
  testing::write_file(s.runs[0].dir + "/checkpoints/step_00000100.h5", "x");
  record_run_error(s.runs[1], "ladder: error: x.h5: damaged, \"quoted\"");
  std::vector<RunState> states;
  for (const auto& r : s.runs)
    states.push_back(read_run_state(r));
  EXPECT_EQ(states[0].status, "done");
  EXPECT_EQ(states[1].status, "failed");
  EXPECT_EQ(states[1].error, "ladder: error: x.h5: damaged, \"quoted\"");
  EXPECT_EQ(states[2].status, "pending");
  write_index(s, states);
  const std::string csv = testing::read_file(s.dir + "/index.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "run,status,optim.lr,N,N_total,flops_per_token,D,C,flops_spent,branched_from,kind,"
            "steps,steps_done,tokens_seen,final_loss,final_val_loss,best_val_loss,elapsed_s,trace,"
            "error");
  EXPECT_NE(csv.find("lr=0.002,failed,0.002,"), std::string::npos);
  EXPECT_NE(csv.find(",\"ladder: error: x.h5: damaged, \"\"quoted\"\"\"\n"), std::string::npos);
  h5::File f = h5::File::open(s.dir + "/index.h5", false);
  EXPECT_EQ(h5::get_string_attr(f, "/", "format"), "ladder-sweep-index");
  EXPECT_EQ(h5::read_strings(f, "runs/status"),
            (std::vector<std::string>{"done", "failed", "pending"}));
  const torch::Tensor lr = h5::read_tensor(f, "runs/optim.lr");
  EXPECT_DOUBLE_EQ(lr[1].item<double>(), 0.002);
  EXPECT_EQ(h5::read_tensor(f, "runs/steps_done")[0].item<double>(), 100);
  // Clearing the error after a success.
  record_run_error(s.runs[1], "");
  EXPECT_EQ(read_run_state(s.runs[1]).status, "pending");
}

// Every shipped sweep file expands and validates every run, from a folder holding data/brown (the
// metadata of the bundled corpus prepared with the bytes tokenizer, as the recipes expect).
TEST_F(SweepFile, ShippedSweepsAreValid) {
  data::DatasetMeta meta = data::DatasetMeta::read(dir.path("ds"));
  // The datasets the shipped recipes name (the mixture sweep's has the corpus's domains too).
  for (const char* dataset : {"data/brown", "data/brown-genres"}) {
    fs::create_directories(dir.path(dataset));
    meta.write(dir.path(dataset));
  }
  const fs::path before = fs::current_path();
  fs::current_path(dir.path(""));
  const std::string sweeps = std::string(LADDER_SOURCE_DIR) + "/recipes/sweeps/";
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(sweeps))
    if (e.path().extension() == ".toml") {
      ++files;
      try {
        const Sweep s = load_sweep(e.path().string());
        EXPECT_GE(s.runs.size(), 2u) << e.path();
      } catch (const Error& error) {
        ADD_FAILURE() << e.path() << ": " << error.what();
      }
    }
  fs::current_path(before);
  EXPECT_GE(files, 5u);
}

}  // namespace
}  // namespace ladder
