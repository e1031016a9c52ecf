#include "trainer/recipe/recipe.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "core/error.h"
#include "test_util.h"

namespace ladder {
namespace {

using testing::TempDir;
using testing::write_file;

const char* kValid = R"([run]
name = "unit"
seed = 3
[data]
seq_len = 64
[model]
d_model = 128
n_layers = 2
n_heads = 4
[train]
steps = 100
global_batch = 16
micro_batch = 4
[schedule]
warmup = 10
)";

// Loads `text` as recipe.toml from a fresh folder; returns the error message, or "" when it loads.
std::string error_of(const std::string& text, std::vector<std::string> overrides = {},
                     int world = 1, const std::map<std::string, std::string>& extra_files = {}) {
  TempDir dir;
  write_file(dir.path("recipe.toml"), text);
  for (const auto& [name, body] : extra_files)
    write_file(dir.path(name), body);
  try {
    load_recipe(dir.path("recipe.toml"), {overrides, world, {}});
  } catch (const Error& e) {
    // Messages name the file by its full path; tests compare from the file name on.
    std::string m = format_error(e);
    const std::string prefix = dir.path() + "/";
    for (size_t at; (at = m.find(prefix)) != std::string::npos;)
      m.erase(at, prefix.size());
    return m;
  }
  return "";
}

TEST(Recipe, LoadsValidRecipeWithDefaultsAndDerivedValues) {
  TempDir dir;
  write_file(dir.path("recipe.toml"), kValid);
  const Recipe r = load_recipe(dir.path("recipe.toml"), {{}, 2, {}});
  EXPECT_EQ(r.run.name, "unit");
  EXPECT_EQ(r.run.seed, 3);
  EXPECT_EQ(r.model.d_model, 128);
  EXPECT_EQ(r.model.n_kv_heads, 4);       // derived from n_heads
  EXPECT_EQ(r.model.ffn_hidden, 384);     // ceil(8/3 * 128) = 342 -> multiple of 64
  EXPECT_EQ(r.parallel.dp, 2);            // derived from the world size
  EXPECT_EQ(r.parallel.microbatches, 2);  // 16 / (2 * 4)
  EXPECT_EQ(r.train.tokens, 100 * 16 * 64);
  EXPECT_DOUBLE_EQ(r.optim.lr, 3e-3);  // default
  EXPECT_EQ(r.schedule.kind, optim::LrSchedule::Cosine);
  EXPECT_EQ(r.checkpoint.intermediate.rule, IntermediateRule::Log2);
  EXPECT_TRUE(r.is_derived("parallel.dp"));
  EXPECT_FALSE(r.is_derived("model.d_model"));
}

TEST(Recipe, TokensBudgetRoundsUpToWholeSteps) {
  const std::string text =
      std::string(kValid).replace(std::string(kValid).find("steps = 100"), 11, "tokens = 100000");
  TempDir dir;
  write_file(dir.path("r.toml"), text);
  const Recipe r = load_recipe(dir.path("r.toml"));
  EXPECT_EQ(r.train.steps, 98);  // ceil(100000 / (16 * 64))
  EXPECT_EQ(r.train.tokens, 98 * 16 * 64);
}

// A batch on a sweep axis: the micro-batch is what a rank holds, the step takes the largest divisor
// of its share not above it; the warm-up can be a token count that holds across batches.
TEST(Recipe, AnyBatchRunsAndAWarmupInTokensHoldsAcrossBatches) {
  TempDir dir;
  write_file(dir.path("r.toml"), kValid);
  for (const auto& [batch, micro, microbatches] : std::vector<std::tuple<int, int, int>>{
           {16, 4, 4}, {12, 4, 3}, {6, 3, 2}, {2, 2, 1}, {7, 1, 7}}) {
    const Recipe r =
        load_recipe(dir.path("r.toml"), {{"train.global_batch=" + std::to_string(batch)}, 1, {}});
    EXPECT_EQ(r.train.micro_batch, micro) << batch;
    EXPECT_EQ(r.parallel.microbatches, microbatches) << batch;
    EXPECT_EQ(r.is_derived("train.micro_batch"), micro != 4) << batch;
  }
  // 2 ranks: each takes 9 of 18 sequences, 3 at a time.
  const Recipe two = load_recipe(dir.path("r.toml"), {{"train.global_batch=18"}, 2, {}});
  EXPECT_EQ(two.train.micro_batch, 3);
  EXPECT_EQ(two.parallel.microbatches, 3);

  const std::string tokens = std::string(kValid).replace(std::string(kValid).find("warmup = 10"),
                                                         11, "warmup_tokens = 20000");
  write_file(dir.path("t.toml"), tokens);
  for (const auto& [batch, warmup] :
       std::vector<std::pair<int, int>>{{16, 20}, {32, 10}, {5, 63}}) {
    const Recipe r =
        load_recipe(dir.path("t.toml"), {{"train.global_batch=" + std::to_string(batch)}, 1, {}});
    EXPECT_EQ(r.schedule.warmup, warmup) << batch;  // ceil(20000 / (batch x 64))
    EXPECT_TRUE(r.is_derived("schedule.warmup"));
  }
  EXPECT_EQ(
      error_of(tokens, {"schedule.warmup=5"}),
      "ladder: error: recipe.toml:15: schedule.warmup_tokens: gives the warm-up in tokens and "
      "schedule.warmup in steps: give one of them");
}

TEST(Recipe, BaseInheritanceAndOverridesApplyInOrder) {
  TempDir dir;
  write_file(dir.path("base/base.toml"), kValid);
  write_file(dir.path("child.toml"), R"(base = "base/base.toml"
[model]
d_model = 256
[optim]
lr = 1e-3
)");
  const Recipe r = load_recipe(dir.path("child.toml"),
                               {{"optim.lr=2e-3", "model.arch=moe", "run.name=\"quoted\""}, 1, {}});
  EXPECT_EQ(r.model.d_model, 256);             // child over base
  EXPECT_EQ(r.model.n_layers, 2);              // from base
  EXPECT_DOUBLE_EQ(r.optim.lr, 2e-3);          // --set over child
  EXPECT_EQ(r.model.arch, models::Arch::Moe);  // a bare word is a string
  EXPECT_EQ(r.run.name, "quoted");
}

TEST(Recipe, ALaterLayerGivingTokensOrStepsReplacesTheOther) {
  TempDir dir;
  write_file(dir.path("base.toml"), kValid);  // gives train.steps = 100
  write_file(dir.path("child.toml"), "base = \"base.toml\"\n[train]\ntokens = 20480\n");
  const Recipe child = load_recipe(dir.path("child.toml"));
  EXPECT_EQ(child.train.tokens, 20480);
  EXPECT_EQ(child.train.steps, 20480 / (16 * 64));
  const Recipe set = load_recipe(dir.path("base.toml"), {{"train.tokens=30720"}, 1, {}});
  EXPECT_EQ(set.train.steps, 30);
  const Recipe back = load_recipe(dir.path("child.toml"), {{"train.steps=17"}, 1, {}});
  EXPECT_EQ(back.train.steps, 17);
  // An override's origin names where it was written (a sweep file's line).
  try {
    load_recipe(dir.path("base.toml"), {{"model.d_model=99"}, 1, {"sweep.toml:4"}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(format_error(e),
              "ladder: error: sweep.toml:4: model.d_model: must be divisible by model.n_heads (4); "
              "got 99");
  }
}

TEST(Recipe, IntegerIsAcceptedForFloatKeys) {
  TempDir dir;
  write_file(dir.path("r.toml"), std::string(kValid) + "[optim]\nlr = 1\n");
  EXPECT_DOUBLE_EQ(load_recipe(dir.path("r.toml")).optim.lr, 1.0);
}

TEST(Recipe, ResolvedRecipeRoundTripsAndStaysPortableAcrossWorldSizes) {
  TempDir dir;
  write_file(
      dir.path("r.toml"),
      std::string(kValid) + "[checkpoint]\nintermediate = [10, 20, 40]\n[optim]\nlr = 1.5e-4\n");
  const Recipe a = load_recipe(dir.path("r.toml"), {{}, 2, {}});
  const std::string text = resolved_recipe_toml(a);
  write_resolved_recipe(a, dir.path("resolved.toml"));
  EXPECT_EQ(testing::read_file(dir.path("resolved.toml")), text);
  const Recipe b = load_recipe(dir.path("resolved.toml"), {{}, 2, {}});
  // Identical but for the first line, which names the source file.
  const std::string again = resolved_recipe_toml(b);
  EXPECT_EQ(again.substr(again.find('\n')), text.substr(text.find('\n')));
  EXPECT_EQ(b.checkpoint.intermediate.points, (std::vector<int64_t>{10, 20, 40}));
  EXPECT_DOUBLE_EQ(b.optim.lr, 1.5e-4);
  EXPECT_DOUBLE_EQ(b.model.ffn_multiplier, 8.0 / 3.0);  // floats survive exactly
  // dp was derived, so the resolved recipe loads at another world size too.
  EXPECT_EQ(load_recipe(dir.path("resolved.toml"), {{}, 4, {}}).parallel.dp, 4);
  EXPECT_NE(text.find("dp = 0  # derived: 2"), std::string::npos) << text;
}

TEST(Recipe, ParseFromTextUsesTheGivenName) {
  const Recipe r = parse_recipe(kValid, "inline.toml", ".");
  EXPECT_EQ(r.source, "inline.toml");
  try {
    parse_recipe("[model]\nd_model = 0\n[train]\nsteps = 1\n", "inline.toml", ".");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(format_error(e), "ladder: error: inline.toml:2: model.d_model: must be >= 1; got 0");
  }
}

// Malformed recipes: each gives its own message, naming file, line and key.
struct BadRecipe {
  const char* name;
  std::string text;
  std::vector<std::string> overrides;
  int world;
  std::string expected;
};

void PrintTo(const BadRecipe& c, std::ostream* os) {
  *os << c.name;
}

std::string with(const std::string& extra) {
  return std::string(kValid) + extra;
}
std::string replacing(const std::string& from, const std::string& to) {
  std::string s = kValid;
  return s.replace(s.find(from), from.size(), to);
}

class MalformedRecipe : public ::testing::TestWithParam<BadRecipe> {};

TEST_P(MalformedRecipe, GivesItsMessage) {
  const BadRecipe& c = GetParam();
  EXPECT_EQ(error_of(c.text, c.overrides, c.world), c.expected);
}

const BadRecipe kBadRecipes[] = {
    {"unknown_key",
     replacing("d_model = 128", "d_modle = 128"),
     {},
     1,
     "ladder: error: recipe.toml:7: model.d_modle: unknown key (did you mean model.d_model?); "
     "recipes/README.md lists every key"},
    {"unknown_section",
     with("[optimizer]\nlr = 1e-3\n"),
     {},
     1,
     "ladder: error: recipe.toml:16: [optimizer]: unknown section (did you mean optim?); sections "
     "are run, data, model, moe, hybrid, parscale, parallel, diloco, train, optim, schedule, "
     "mup, checkpoint, eval"},
    {"top_level_key",
     "lr = 3\n" + std::string(kValid),
     {},
     1,
     "ladder: error: recipe.toml:1: lr: keys belong in a [section]; only `base` may stand at the "
     "top "
     "(sections: run, data, model, moe, hybrid, parscale, parallel, diloco, train, optim, "
     "schedule, mup, checkpoint, eval)"},
    {"wrong_type_string_for_int",
     replacing("d_model = 128", "d_model = \"128\""),
     {},
     1,
     "ladder: error: recipe.toml:7: model.d_model: expected an integer, got a string (\"128\")"},
    {"wrong_type_float_for_int",
     replacing("n_layers = 2", "n_layers = 2.5"),
     {},
     1,
     "ladder: error: recipe.toml:8: model.n_layers: expected an integer, got a float"},
    {"wrong_type_bool",
     replacing("n_heads = 4", "n_heads = 4\nqk_norm = \"yes\""),
     {},
     1,
     "ladder: error: recipe.toml:10: model.qk_norm: expected true or false, got a string "
     "(\"yes\")"},
    {"out_of_range",
     replacing("n_heads = 4", "n_heads = 0"),
     {},
     1,
     "ladder: error: recipe.toml:9: model.n_heads: must be >= 1; got 0"},
    {"out_of_range_float",
     with("[optim]\nbeta2 = 1.0\n"),
     {},
     1,
     "ladder: error: recipe.toml:17: optim.beta2: must be in [0.0, 1.0); got 1.0"},
    {"bad_choice",
     with("[parallel]\nschedule = \"1f1f\"\n"),
     {},
     1,
     "ladder: error: recipe.toml:17: parallel.schedule: must be one of 1f1b, gpipe, interleaved; "
     "got \"1f1f\" (did you mean 1f1b?)"},
    {"d_model_not_divisible",
     replacing("n_heads = 4", "n_heads = 3"),
     {},
     1,
     "ladder: error: recipe.toml:7: model.d_model: must be divisible by model.n_heads (3); got "
     "128"},
    {"kv_heads_not_dividing",
     replacing("n_heads = 4", "n_heads = 4\nn_kv_heads = 3"),
     {},
     1,
     "ladder: error: recipe.toml:10: model.n_kv_heads: must divide model.n_heads (4); got 3"},
    {"world_size_mismatch",
     with("[parallel]\ntp = 2\ndp = 2\n"),
     {},
     2,
     "ladder: error: recipe.toml:18: parallel.dp: tp x pp x dp x islands = 2 x 1 x 2 x 1 = 4, but "
     "the job has 2 ranks (set parallel.dp = 0 to derive it)"},
    {"world_not_divisible",
     with("[parallel]\npp = 2\n"),
     {},
     3,
     "ladder: error: recipe.toml:17: parallel.pp: tp x pp x islands = 1 x 2 x 1 = 2 does not "
     "divide "
     "the world size 3"},
    {"batch_not_divisible",
     replacing("global_batch = 16", "global_batch = 17"),
     {},
     2,
     "ladder: error: recipe.toml:12: train.global_batch: must be a multiple of parallel.dp (2: "
     "each data-parallel rank takes an equal share); got 17"},
    {"no_length",
     replacing("steps = 100\n", ""),
     {},
     1,
     "ladder: error: recipe.toml: train.steps: the run needs a length: set train.steps or "
     "train.tokens"},
    {"steps_and_tokens",
     replacing("steps = 100", "steps = 100\ntokens = 5000"),
     {},
     1,
     "ladder: error: recipe.toml:12: train.tokens: give train.steps or train.tokens, not both"},
    {"warmup_too_long",
     replacing("warmup = 10", "warmup = 100"),
     {},
     1,
     "ladder: error: recipe.toml:15: schedule.warmup: must be smaller than train.steps (100); got "
     "100"},
    {"tp_not_dividing_heads",
     with("[parallel]\ntp = 3\n"),
     {},
     3,
     "ladder: error: recipe.toml:17: parallel.tp: must divide model.n_heads (4) and "
     "model.n_kv_heads (4); got 3"},
    {"missing_base",
     "base = \"nope.toml\"\n" + std::string(kValid),
     {},
     1,
     "ladder: error: recipe.toml:1: base: no such recipe file \"nope.toml\""},
    {"base_not_string",
     "base = 3\n" + std::string(kValid),
     {},
     1,
     "ladder: error: recipe.toml:1: base: expected a string (a recipe path)"},
    {"set_without_equals",
     kValid,
     {"optim.lr"},
     1,
     "ladder: error: --set optim.lr: expected section.key=value, as in --set optim.lr=3e-3"},
    {"set_without_section",
     kValid,
     {"lr=3"},
     1,
     "ladder: error: --set lr=3: expected section.key=value, as in --set optim.lr=3e-3"},
    {"set_empty_value",
     kValid,
     {"optim.lr="},
     1,
     "ladder: error: --set optim.lr=: missing value after '='"},
    {"set_wrong_type",
     kValid,
     {"optim.lr=fast"},
     1,
     "ladder: error: --set optim.lr=fast: optim.lr: expected a number, got a string (\"fast\")"},
    {"fused_cuda_kernels_on_the_cpu",
     kValid,
     {"train.fused_cuda_kernels=true"},
     1,
     "ladder: error: --set train.fused_cuda_kernels=true: train.fused_cuda_kernels: applies to "
     "train.device = \"cuda\" only (the CPU's fused kernels are train.fused_kernels)"},
    {"fused_cuda_kernels_without_the_fused_paths",
     kValid,
     {"train.device=\"cuda\"", "train.fused_kernels=false", "train.fused_cuda_kernels=true"},
     1,
     "ladder: error: --set train.fused_cuda_kernels=true: train.fused_cuda_kernels: needs "
     "train.fused_kernels = true (the fused paths)"},
    {"cuda_graph_on_the_cpu",
     kValid,
     {"train.cuda_graph=true"},
     1,
     "ladder: error: --set train.cuda_graph=true: train.cuda_graph: applies to train.device = "
     "\"cuda\" only"},
    {"cuda_graph_without_the_sync_free_step",
     kValid,
     {"train.device=\"cuda\"", "train.cuda_graph=true"},
     1,
     "ladder: error: --set train.cuda_graph=true: train.cuda_graph: needs train.sync_free_step = "
     "true (a captured step cannot wait for the host)"},
    {"cuda_graph_over_two_ranks",
     kValid,
     {"train.device=\"cuda\"", "train.sync_free_step=true", "train.cuda_graph=true",
      "parallel.dp=2"},
     2,
     "ladder: error: --set train.cuda_graph=true: train.cuda_graph: one rank only for now (tp x "
     "pp x dp = 2): the NCCL backend's waits poll from the host"},
    {"set_unknown_key",
     kValid,
     {"model.width=3"},
     1,
     "ladder: error: --set model.width=3: model.width: unknown key; recipes/README.md lists every "
     "key"},
    {"intermediate_not_increasing",
     with("[checkpoint]\nintermediate = [10, 5]\n"),
     {},
     1,
     "ladder: error: recipe.toml:17: checkpoint.intermediate: a list must be strictly increasing "
     "and "
     "positive; got 5 after 10"},
    {"intermediate_past_end",
     with("[checkpoint]\nintermediate = [10, 500]\n"),
     {},
     1,
     "ladder: error: recipe.toml:17: checkpoint.intermediate: 500 lies past the end of the run "
     "(100 "
     "steps)"},
    {"bad_run_name",
     replacing("name = \"unit\"", "name = \"a/b\""),
     {},
     1,
     "ladder: error: recipe.toml:2: run.name: must be letters, digits, '.', '_', '-' or '=' (a "
     "folder name); got \"a/b\""},
    {"sequence_parallel_without_tp",
     with("[parallel]\nsequence_parallel = true\n"),
     {},
     1,
     "ladder: error: recipe.toml:17: parallel.sequence_parallel: needs parallel.tp > 1"},
    {"pp_exceeds_layers",
     with("[parallel]\npp = 4\n"),
     {},
     4,
     "ladder: error: recipe.toml:17: parallel.pp: pp x virtual_stages = 4 stages cannot exceed "
     "model.n_layers (2): every stage needs a layer"},
    {"interleaved_stages_exceed_layers",
     with("[parallel]\npp = 2\nschedule = \"interleaved\"\nvirtual_stages = 2\n"),
     {},
     2,
     "ladder: error: recipe.toml:19: parallel.virtual_stages: pp x virtual_stages = 4 stages "
     "cannot "
     "exceed model.n_layers (2): every stage needs a layer"},
    {"virtual_stages_without_interleaving",
     with("[parallel]\npp = 2\nvirtual_stages = 2\n"),
     {},
     2,
     "ladder: error: recipe.toml:18: parallel.virtual_stages: needs parallel.schedule = "
     "\"interleaved\"; got 2 with \"1f1b\""},
    {"stage_layers_do_not_sum",
     with("[parallel]\npp = 2\nstage_layers = [1, 2]\n"),
     {},
     2,
     "ladder: error: recipe.toml:18: parallel.stage_layers: needs pp x virtual_stages = 2 entries "
     "summing to model.n_layers (2); got 2 summing to 3"},
    {"one_f_one_b_with_fewer_microbatches_than_stages",
     with("[parallel]\npp = 2\n"),
     {"train.micro_batch=16"},
     2,
     "ladder: error: recipe.toml:17: parallel.pp: 1F1B needs at least pp micro-batches per step "
     "(parallel.microbatches = 1 < pp = 2): raise train.global_batch or lower train.micro_batch, "
     "or "
     "use schedule = \"gpipe\""},
    {"mup_with_tied_embeddings",
     with("[mup]\nparametrization = \"mup\"\n"),
     {"model.tie_embeddings=true"},
     1,
     "ladder: error: --set model.tie_embeddings=true: model.tie_embeddings: muP needs an untied "
     "readout (the embedding keeps its scale with width, the readout's output shrinks as 1/m); set "
     "model.tie_embeddings = false"},
    {"depth_alpha_not_of_completep",
     with("[mup]\nbase_depth = 2\ndepth_alpha = 0.3\n"),
     {},
     1,
     "ladder: error: recipe.toml:18: mup.depth_alpha: must be 0, 0.5 or 1 (the depth "
     "parametrizations of CompleteP); got 0.3"},
    {"depth_alpha_without_base_depth",
     with("[mup]\ndepth_alpha = 1\n"),
     {},
     1,
     "ladder: error: recipe.toml:17: mup.depth_alpha: needs mup.base_depth (the depth the "
     "hyperparameters were tuned at)"},
    {"timescale_without_tau",
     with("[mup]\nwd_rule = \"timescale\"\n"),
     {},
     1,
     "ladder: error: recipe.toml:17: mup.wd_rule: \"timescale\" needs mup.wd_timescale > 0 (the "
     "AdamW timescale as a fraction of the run)"},
    {"tau_without_timescale",
     with("[mup]\nwd_timescale = 0.2\n"),
     {},
     1,
     "ladder: error: recipe.toml:17: mup.wd_timescale: is read only with mup.wd_rule = "
     "\"timescale\"; got wd_rule \"constant\""},
    {"top_k_above_experts",
     with("[moe]\nexperts = 4\ntop_k = 5\n"),
     {"model.arch=moe"},
     1,
     "ladder: error: recipe.toml:18: moe.top_k: must not exceed moe.experts (4); got 5"},
    {"ep_not_dividing_dp",
     std::string(kValid),
     {"model.arch=moe", "parallel.ep=2"},
     3,
     "ladder: error: --set parallel.ep=2: parallel.ep: must divide parallel.dp (3): "
     "expert-parallel "
     "groups are carved out of the data-parallel ranks; got 2"},
    {"ep_not_dividing_experts",
     with("[moe]\nexperts = 6\n[parallel]\nep = 4\n"),
     {"model.arch=moe", "train.micro_batch=2"},
     4,
     "ladder: error: recipe.toml:19: parallel.ep: must divide moe.experts (6); got 4"},
    {"ep_without_experts",
     with("[parallel]\nep = 2\n"),
     {},
     2,
     "ladder: error: recipe.toml:17: parallel.ep: splits experts: it needs model.arch = \"moe\"; "
     "got "
     "\"dense\""},
    {"granularity_not_whole",
     with("[moe]\ngranularity = 5.0\n"),
     {"model.arch=moe"},
     1,
     "ladder: error: recipe.toml:17: moe.granularity: model.ffn_hidden / granularity = 384 / 5.0 = "
     "76.8 is not a whole number of hidden units; choose another granularity or set "
     "moe.expert_ffn"},
    {"bad_pattern_letter",
     with("[hybrid]\npattern = \"MMXA\"\n"),
     {"model.arch=hybrid"},
     1,
     "ladder: error: recipe.toml:17: hybrid.pattern: letter 3 is 'X': layers are M (Mamba-2) or A "
     "(attention); got \"MMXA\""},
    {"ssm_head_dim_not_dividing_inner",
     with("[hybrid]\nssm_head_dim = 48\n"),
     {"model.arch=hybrid"},
     1,
     "ladder: error: recipe.toml:17: hybrid.ssm_head_dim: must divide expand x d_model = 256; got "
     "48"},
    {"tp_not_dividing_ssm_heads",
     with("[hybrid]\nssm_head_dim = 128\n[parallel]\ntp = 4\n"),
     {"model.arch=hybrid"},
     4,
     "ladder: error: recipe.toml:19: parallel.tp: must divide the SSM heads (expand x d_model / "
     "ssm_head_dim = 2); got 4"},
    {"sequence_parallel_with_streams",
     with("[parscale]\nstreams = 2\n[parallel]\ntp = 2\nsequence_parallel = true\n"),
     {"model.arch=parscale"},
     2,
     "ladder: error: recipe.toml:20: parallel.sequence_parallel: cannot split the tokens of "
     "parscale.streams > 1: the streams of a token meet in the aggregation on one rank; use tensor "
     "parallelism without it"},
    {"tp_not_dividing_expert_ffn",
     with("[moe]\nexpert_ffn = 65\n[parallel]\ntp = 2\n"),
     {"model.arch=moe"},
     2,
     "ladder: error: recipe.toml:19: parallel.tp: must divide moe.expert_ffn (65); got 2"},
    {"diloco_more_fragments_than_inner_steps",
     with("[parallel]\nislands = 2\n[diloco]\ninner_steps = 4\nfragments = 5\n"),
     {},
     2,
     "ladder: error: recipe.toml:20: diloco.fragments: must not exceed diloco.inner_steps (4): "
     "each fragment synchronises on its own step of the 4; got 5"},
    {"diloco_overlap_not_below_inner_steps",
     with("[parallel]\nislands = 2\n[diloco]\ninner_steps = 4\noverlap_steps = 4\n"),
     {},
     2,
     "ladder: error: recipe.toml:20: diloco.overlap_steps: must be below diloco.inner_steps (4): "
     "an exchange lands before the fragment's next one starts; got 4"},
    {"diloco_reset_with_fragments",
     with("[parallel]\nislands = 2\n[diloco]\nfragments = 2\ninner_state = \"reset\"\n"),
     {},
     2,
     "ladder: error: recipe.toml:20: diloco.inner_state: \"reset\" restarts the whole inner "
     "optimizer, so it needs diloco.fragments = 1; got 2 fragments"},
    {"diloco_unknown_dtype",
     with("[diloco]\npseudo_grad_dtype = \"fp8\"\n"),
     {},
     1,
     "ladder: error: recipe.toml:17: diloco.pseudo_grad_dtype: must be one of fp32, bf16, int8, "
     "int4; got \"fp8\" (did you mean fp32?)"},
    {"islands_not_dividing_world",
     with("[parallel]\nislands = 2\n"),
     {},
     3,
     "ladder: error: recipe.toml:17: parallel.islands: tp x pp x islands = 1 x 1 x 2 = 2 does not "
     "divide the world size 3"},
};

INSTANTIATE_TEST_SUITE_P(Table, MalformedRecipe, ::testing::ValuesIn(kBadRecipes),
                         [](const auto& info) { return std::string(info.param.name); });

// The cases whose full text depends on a third-party message: check what ladder controls.
TEST(Recipe, InvalidTomlNamesFileAndLine) {
  const std::string m = error_of("[run]\nname = \"x\"\n[model\nd_model = 3\n");
  EXPECT_EQ(m.rfind("ladder: error: recipe.toml:3: invalid TOML: ", 0), 0u) << m;
}

TEST(Recipe, BaseCycleIsReported) {
  const std::string m = error_of(
      "base = \"loop_a.toml\"\n", {}, 1,
      {{"loop_a.toml", "base = \"loop_b.toml\"\n"}, {"loop_b.toml", "base = \"loop_a.toml\"\n"}});
  EXPECT_NE(m.find("base: recipes include each other in a cycle"), std::string::npos) << m;
  EXPECT_EQ(m.rfind("ladder: error: loop_b.toml:1: ", 0), 0u) << m;
}

TEST(Recipe, OverrideWithBadTomlValue) {
  const std::string m = error_of(kValid, {"checkpoint.intermediate=[1,"});
  EXPECT_EQ(m.rfind("ladder: error: --set checkpoint.intermediate=[1,: invalid TOML value: ", 0),
            0u)
      << m;
}

TEST(Recipe, MissingFile) {
  try {
    load_recipe("/nonexistent/recipe.toml");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(format_error(e), "ladder: error: /nonexistent/recipe.toml: no such recipe file");
  }
}

// Keeps recipes/README.md true: every key of the schema is documented there.
TEST(Recipe, EveryKeyIsDocumented) {
  const std::string readme =
      testing::read_file(std::string(LADDER_SOURCE_DIR) + "/recipes/README.md");
  ASSERT_FALSE(readme.empty());
  for (const auto& k : recipe_schema()) {
    EXPECT_NE(readme.find("`" + k.key + "`"), std::string::npos) << k.key << " is not documented";
  }
}

// The shipped recipes load (quickstart on two ranks too).
TEST(Recipe, ShippedRecipesAreValid) {
  const std::string dir = std::string(LADDER_SOURCE_DIR) + "/recipes/";
  // The ranks a recipe needs at least (its islands); every other recipe runs in one process.
  const std::map<std::string, int> ranks = {{"diloco-tiny.toml", 2}};
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".toml") {
      const auto it = ranks.find(e.path().filename().string());
      EXPECT_NO_THROW(load_recipe(e.path().string(), {{}, it == ranks.end() ? 1 : it->second, {}}))
          << e.path();
    }
  EXPECT_NO_THROW(load_recipe(dir + "quickstart.toml", {{}, 2, {}}));
}

}  // namespace
}  // namespace ladder
