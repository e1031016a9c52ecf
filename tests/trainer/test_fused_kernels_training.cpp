// Training with kernels/' fused CPU kernels (train.fused_kernels, the default) against the LibTorch
// composites (train.fused_kernels = false): the same losses, gradient norms and validation losses
// within 1e-5 over 20 fp32 steps, for every architecture (they share the blocks).
#include "kernels/cpu.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

class FusedKernelsTraining : public TrainingFixture {
 protected:
  void SetUp() override {
    if (!kernels::cpu_has_avx2()) GTEST_SKIP() << "this CPU has no AVX2: the kernels fall back";
  }

  // Trains `extra` with `flags` twice, fused and composite, and compares the traces.
  static void expect_fused_matches_composite(const std::string& name, const std::string& extra,
                                             const std::string& flags) {
    const auto fused = train(recipe(name + "_fused", extra), flags);
    ASSERT_EQ(fused.status, 0) << fused.output;
    const auto composite =
        train(recipe(name + "_composite", extra), flags + " --set train.fused_kernels=false");
    ASSERT_EQ(composite.status, 0) << composite.output;
    expect_same_training(run_dir(name + "_fused") + "/trace.h5",
                         run_dir(name + "_composite") + "/trace.h5", name, kTolerance);
  }

  static constexpr double kTolerance = 1e-5;  // the bound
};

const char* k20 =
    "[train]\nsteps = 20\nglobal_batch = 8\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 10\nkeep = 2\n[eval]\nevery_steps = 10\ntokens = 512\n";

TEST_F(FusedKernelsTraining, DenseWithZLossAndMupMultipliers) {
  // muP scales the residual branches and the logits (the kernels take both), z-loss adds the
  // log-partition's gradient; QK-norm is on in every recipe here.
  expect_fused_matches_composite("dense",
                                 std::string(k20) +
                                     "[mup]\nparametrization = \"mup\"\n"
                                     "base_width = 16\nbase_depth = 1\n"
                                     "depth_alpha = 0.5\n",
                                 "--set model.z_loss=1e-3 --set model.tie_embeddings=false");
}

TEST_F(FusedKernelsTraining, MixtureOfExperts) {
  expect_fused_matches_composite("moe",
                                 std::string(k20) +
                                     "[moe]\nexperts = 4\ntop_k = 2\n"
                                     "shared_experts = 1\n",
                                 "--set model.arch=moe");
}

TEST_F(FusedKernelsTraining, Hybrid) {
  expect_fused_matches_composite(
      "hybrid",
      std::string(k20) +
          "[hybrid]\npattern = \"MA\"\nssm_state = 8\nssm_head_dim = 16\nconv_kernel = 4\n"
          "chunk = 8\nexpand = 2\n",
      "--set model.arch=hybrid");
}

TEST_F(FusedKernelsTraining, ParScale) {
  expect_fused_matches_composite(
      "parscale",
      std::string(k20) +
          "[parscale]\nstreams = 2\nprefix_tokens = 4\naggregation_smoothing = 0.1\n",
      "--set model.arch=parscale");
}

TEST_F(FusedKernelsTraining, ManyThreadsMatchOneThreadComposite) {
  // The fused kernels' parallel branches: d_model 192 with 4 x 64 rows per micro-batch gives the
  // norms' backward two blocks of rows, which 3 threads split unevenly (at::parallel_for's chunks
  // of 128 rows, shorter than the norm's grain of 170, once made two tasks share a partial gain
  // gradient). 3 threads fused against 1 thread composite.
  const std::string shape =
      "--set model.d_model=192 --set model.n_heads=3 --set model.n_kv_heads=3 "
      "--set data.seq_len=64 --set train.micro_batch=4 --set train.global_batch=8 "
      "--set train.steps=8 --set eval.every_steps=4 --set checkpoint.every_steps=4";
  const auto fused = train(recipe("threads_fused", k20), shape, 0, 3);
  ASSERT_EQ(fused.status, 0) << fused.output;
  EXPECT_NE(fused.output.find("3 threads per rank"), std::string::npos) << fused.output;
  const auto composite =
      train(recipe("threads_composite", k20), shape + " --set train.fused_kernels=false");
  ASSERT_EQ(composite.status, 0) << composite.output;
  expect_same_training(run_dir("threads_fused") + "/trace.h5",
                       run_dir("threads_composite") + "/trace.h5", "3 threads", kTolerance);
}

TEST_F(FusedKernelsTraining, SwitchIsARecipeKey) {
  // A wrong type is a recipe error before any work, like every key.
  const auto r = train(recipe("fused_bad", k20), "--set train.fused_kernels=3");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("train.fused_kernels"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ladder
