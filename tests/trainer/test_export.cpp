// Models that leave the framework: `ladder export --format hf` loaded by transformers (from the
// project's virtual environment) with ladder's logits on the same tokens, and `ladder sample`.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "trainer/run/checkpoint.h"
#include "trainer/tools/inference.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

using testing::run_command;

class Export : public TrainingFixture {
 protected:
  // Trains `name` a few steps (so the weights are not their initial ones), exports it, and checks
  // transformers' logits against ladder's.
  static void expect_transformers_reproduces(const std::string& name, const std::string& extra,
                                             const std::string& flags,
                                             const std::string& architecture) {
    const std::string steps =
        "[train]\nsteps = 20\nglobal_batch = 4\nmicro_batch = 4\n"
        "[optim]\nlr = 1e-2\n[eval]\nevery_steps = 0\n";
    ASSERT_EQ(train(recipe(name, steps + extra), flags).status, 0);
    const std::string checkpoint = checkpoint_path(run_dir(name), 20);
    const std::string out = dir_->path(name + "_hf");
    const auto exported =
        run_command(testing::ladder_binary() + " export " + checkpoint + " --out " + out);
    ASSERT_EQ(exported.status, 0) << exported.output;

    TrainedModel trained = load_trained_model(checkpoint);
    // Text with spaces, a newline, punctuation and characters outside ASCII.
    const std::string text = "Caf\xc3\xa9 au lait,  42!\nThe jury";
    const auto tokenizer = recipe_tokenizer(trained.recipe);
    std::string ids;
    for (const auto id : tokenizer->encode(text))
      ids += (ids.empty() ? "" : ",") + std::to_string(id);
    torch::manual_seed(4);
    const int64_t batch = 2, seq = 24;
    const torch::Tensor tokens = torch::randint(0, trained.vocab_size, {batch, seq});
    torch::Tensor logits;
    {
      torch::NoGradGuard no_grad;
      logits = trained.model->logits(tokens).contiguous();
    }
    const auto write = [&](const std::string& path, const torch::Tensor& t) {
      std::ofstream f(path, std::ios::binary);
      f.write(static_cast<const char*>(t.data_ptr()),
              static_cast<std::streamsize>(t.numel() * t.element_size()));
    };
    write(out + "/tokens.bin", tokens.contiguous());
    write(out + "/logits.bin", logits);
    const auto check =
        run_command(std::string(LADDER_PYTHON) + " " + LADDER_SOURCE_DIR +
                    "/tests/trainer/check_hf_export.py " + out + " " + out + "/tokens.bin " + out +
                    "/logits.bin " + std::to_string(batch) + " " + std::to_string(seq) + " " +
                    std::to_string(trained.vocab_size) + " '" + text + "' " + ids + " " +
                    std::to_string(tokenizer->eod_id()));
    EXPECT_EQ(check.status, 0) << check.output;
    EXPECT_NE(check.output.find(architecture), std::string::npos) << check.output;
    std::printf("%s: %s", name.c_str(),
                check.output.substr(check.output.find(architecture)).c_str());
  }
};

// The fixture's model has QK-norm: Qwen3's per-head norm of queries and keys.
TEST_F(Export, TransformersReproducesTheLogitsOfAQkNormModel) {
  expect_transformers_reproduces("export_qk", "", "", "Qwen3ForCausalLM");
}

// Llama, with grouped-query attention and muP's and CompleteP's multipliers (attention 1/d, output
// 1/width multiplier, residual branches by depth) folded into the weights.
TEST_F(Export, TransformersReproducesTheLogitsOfAMupLlama) {
  expect_transformers_reproduces(
      "export_mup",
      "[mup]\nparametrization = \"mup\"\nbase_width = 16\nbase_depth = 1\ndepth_alpha = 1.0\n",
      "--set model.qk_norm=false --set model.n_kv_heads=1", "LlamaForCausalLM");
}

// A tied embedding stays tied.
TEST_F(Export, TransformersReproducesTheLogitsOfATiedLlama) {
  expect_transformers_reproduces("export_tied", "",
                                 "--set model.qk_norm=false --set model.tie_embeddings=true",
                                 "LlamaForCausalLM");
}

// A SentencePiece dataset: its model goes along as tokenizer.model, which transformers'
// LlamaTokenizer reads with ladder's ids (no dummy prefix, whitespace kept, byte fallback).
TEST_F(Export, TransformersReadsTheSentencePieceTokenizer) {
  const auto prep =
      run_command(testing::ladder_binary() + " prep --input " + LADDER_SOURCE_DIR +
                  "/data/corpus/brown.txt.gz --tokenizer sentencepiece " +
                  "--vocab-size 512 --sp-sentences 20000 --out " + dir_->path("ds_sp"));
  ASSERT_EQ(prep.status, 0) << prep.output;
  expect_transformers_reproduces("export_sp", "", "--set data.path='" + dir_->path("ds_sp") + "'",
                                 "Qwen3ForCausalLM");
}

// A dataset made with a tokenizer.json: the very file goes along, and transformers encodes with
// ladder's ids.
TEST_F(Export, TransformersReadsTheHfTokenizer) {
  const auto prep =
      run_command(testing::ladder_binary() + " prep --input " + LADDER_SOURCE_DIR +
                  "/data/corpus/brown.txt.gz --tokenizer hf --tokenizer-file " + LADDER_SOURCE_DIR +
                  "/data/tokenizers/brown-bpe-4096.json --out " + dir_->path("ds_hf"));
  ASSERT_EQ(prep.status, 0) << prep.output;
  expect_transformers_reproduces("export_hf", "", "--set data.path='" + dir_->path("ds_hf") + "'",
                                 "Qwen3ForCausalLM");
  EXPECT_EQ(
      testing::read_file(dir_->path("export_hf_hf/tokenizer.json")),
      testing::read_file(std::string(LADDER_SOURCE_DIR) + "/data/tokenizers/brown-bpe-4096.json"));
}

TEST_F(Export, ArchitecturesTransformersCannotExpressAreRefused) {
  ASSERT_EQ(train(recipe("export_moe",
                         "[train]\nsteps = 2\nglobal_batch = 4\nmicro_batch = 4\n[eval]\n"
                         "every_steps = 0\n[moe]\nexperts = 4\ntop_k = 2\n"),
                  "--set model.arch=moe --set schedule.warmup=0")
                .status,
            0);
  const auto r = run_command(testing::ladder_binary() + " export " +
                             checkpoint_path(run_dir("export_moe"), 2) + " --out " +
                             dir_->path("export_moe_hf"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("a model of arch \"moe\" cannot be exported"), std::string::npos)
      << r.output;
}

TEST_F(Export, AnOutputPathThatIsAFileIsAnError) {
  // Was an uncaught std::filesystem error (exit 134); now one line, exit 2, and plot alike.
  ASSERT_EQ(train(recipe("export_file",
                         "[train]\nsteps = 2\nglobal_batch = 4\nmicro_batch = 4\n"
                         "[eval]\nevery_steps = 0\n"),
                  "--set schedule.warmup=0")
                .status,
            0);
  testing::write_file(dir_->path("a_file"), "x\n");
  auto r =
      run_command(testing::ladder_binary() + " export " +
                  checkpoint_path(run_dir("export_file"), 2) + " --out " + dir_->path("a_file"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_EQ(r.output, "ladder: error: " + dir_->path("a_file") + ": is a file, not a folder\n");
  r = run_command(testing::ladder_binary() + " plot " + run_dir("export_file") + " --out " +
                  dir_->path("a_file") + "/loss.png");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("is a file"), std::string::npos) << r.output;
}

// `ladder sample`: the prompt continued, the same text for the same seed, another for another.
TEST_F(Export, SampleIsDeterministicForASeed) {
  const std::string steps =
      "[train]\nsteps = 20\nglobal_batch = 4\nmicro_batch = 4\n"
      "[optim]\nlr = 1e-2\n[eval]\nevery_steps = 0\n";
  ASSERT_EQ(train(recipe("sample", steps)).status, 0);
  const std::string checkpoint = checkpoint_path(run_dir("sample"), 20);
  const auto sample = [&](const std::string& flags) {
    return run_command(testing::ladder_binary() + " --log-level warn sample " + checkpoint +
                       " --prompt 'The ' --tokens 24 --threads 1 " + flags);
  };
  const auto a = sample("--seed 7"), b = sample("--seed 7"), c = sample("--seed 8");
  ASSERT_EQ(a.status, 0) << a.output;
  EXPECT_EQ(a.output.rfind("The ", 0), 0u) << a.output;
  EXPECT_GT(a.output.size(), 5u) << a.output;
  EXPECT_EQ(a.output, b.output);
  EXPECT_NE(a.output, c.output);
  const auto greedy = sample("--temperature 0 --seed 1"),
             greedy2 = sample("--temperature 0 --seed 2");
  EXPECT_EQ(greedy.output, greedy2.output);  // no draws: the seed does not matter
  const auto bad = run_command(testing::ladder_binary() + " sample " + checkpoint + " --top-k -1");
  EXPECT_EQ(bad.status, 2) << bad.output;
}

// `ladder plot`: several runs' loss curves on one PNG, with the data beside it.
TEST_F(Export, PlotDrawsTheLossCurvesOfSeveralRuns) {
  const std::string steps =
      "[train]\nsteps = 8\nglobal_batch = 4\nmicro_batch = 4\nlog_every = 1\n"
      "[eval]\nevery_steps = 4\ntokens = 256\n";
  ASSERT_EQ(train(recipe("plot_a", steps)).status, 0);
  ASSERT_EQ(train(recipe("plot_b", steps), "--set optim.lr=1e-2").status, 0);
  const std::string png = dir_->path("plots/both.png");
  const auto r = run_command(testing::ladder_binary() + " plot " + run_dir("plot_a") + " " +
                             run_dir("plot_b") + "/trace.h5 --x flops --log y --out " + png);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("plot: " + png), std::string::npos) << r.output;
  EXPECT_EQ(testing::read_file(png).substr(1, 3), "PNG");
  const std::string train_data = testing::read_file(dir_->path("plots/both.1.train.dat"));
  EXPECT_EQ(std::count(train_data.begin(), train_data.end(), '\n'), 1 + 8) << train_data;
  const std::string eval_data = testing::read_file(dir_->path("plots/both.0.eval.dat"));
  EXPECT_EQ(std::count(eval_data.begin(), eval_data.end(), '\n'), 1 + 2) << eval_data;
  const std::string script = testing::read_file(dir_->path("plots/both.gp"));
  EXPECT_NE(script.find("set logscale y"), std::string::npos) << script;
  EXPECT_NE(script.find("plot_b val"), std::string::npos) << script;
  // One run: its own folder by default.
  const auto one = run_command(testing::ladder_binary() + " plot " + run_dir("plot_a"));
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_TRUE(std::filesystem::exists(run_dir("plot_a") + "/loss.png"));
  const auto bad =
      run_command(testing::ladder_binary() + " plot " + run_dir("plot_a") + " --x time");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("ladder: error: --x: 'time' is not one of tokens, flops, step"),
            std::string::npos)
      << bad.output;
}

}  // namespace
}  // namespace ladder
