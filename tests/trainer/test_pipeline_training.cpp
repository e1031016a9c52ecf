// Pipeline-parallel training with the `ladder` binary under mpirun, against one process at the same
// global batch and seed (fp32): every schedule on (tp, pp, dp) = (1, 2, 2), (2, 2, 1), (1, 4, 1)
// and (2, 2, 2), tied embeddings across the pipeline's ends, checkpoints that move between pipeline
// and other layouts, and the activation memory of 1F1B against GPipe.
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/run/checkpoint.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

class PipelineTraining : public TrainingFixture {};

// Eight layers (pp x virtual stages up to 4 x 2), global batch 8 in micro-batches of 2: four
// micro-batches per step at dp = 1, two at dp = 2.
const char* kTrain20 =
    "[train]\nsteps = 20\nglobal_batch = 8\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 10\nkeep = 2\n[eval]\nevery_steps = 10\ntokens = 512\n";
const std::string kModel = "--set model.n_layers=8 ";

// The bound: a pipeline sums the same products in the same order as one process, but the
// tensor-parallel and data-parallel parts of a layout reorder fp32 sums.
constexpr double kTolerance = 1e-5;

std::string layout_flags(int tp, int pp, const std::string& schedule) {
  return "--set parallel.tp=" + std::to_string(tp) + " --set parallel.pp=" + std::to_string(pp) +
         " --set parallel.schedule=" + schedule +
         (schedule == "interleaved" ? " --set parallel.virtual_stages=2" : "");
}

TEST_F(PipelineTraining, EveryScheduleAndLayoutMatchesOneProcess) {
  ASSERT_EQ(train(recipe("one", kTrain20), kModel).status, 0);
  const std::string one = run_dir("one") + "/trace.h5";
  struct Layout {
    int tp, pp, ranks;
  };
  for (const Layout l : {Layout{1, 2, 4}, Layout{2, 2, 4}, Layout{1, 4, 4}, Layout{2, 2, 8}})
    for (const std::string schedule : {"gpipe", "1f1b", "interleaved"}) {
      const std::string name = "tp" + std::to_string(l.tp) + "_pp" + std::to_string(l.pp) +
                               "_ranks" + std::to_string(l.ranks) + "_" + schedule;
      const auto r =
          train(recipe(name, kTrain20), kModel + layout_flags(l.tp, l.pp, schedule), l.ranks);
      ASSERT_EQ(r.status, 0) << r.output;
      const std::string trace = run_dir(name) + "/trace.h5";
      expect_same_training(trace, one, name, kTolerance);
      expect_same_spectra(trace, one, name, 1e-4);  // each stage contributes its own matrices
      EXPECT_NE(
          r.output.find("pipeline parallel: pp=" + std::to_string(l.pp) + ", schedule " + schedule),
          std::string::npos)
          << r.output;
      for (const double bytes : series(trace, "train/pp_p2p_bytes"))
        EXPECT_GT(bytes, 0.0) << name;
      for (int s = 0; s < l.pp; ++s)
        for (const double bubble : series(trace, "train/stage_bubble_" + std::to_string(s))) {
          EXPECT_GE(bubble, 0.0) << name;
          EXPECT_LT(bubble, 1.0) << name;
        }
    }
}

TEST_F(PipelineTraining, TiedEmbeddingsStayTiedAcrossTheEnds) {
  const std::string tied = kModel + "--set model.tie_embeddings=true ";
  ASSERT_EQ(train(recipe("tied_one", kTrain20), tied).status, 0);
  const std::string one = run_dir("tied_one") + "/trace.h5";
  // pp = 2 with ZeRO-1 over dp = 2 (the embedding's gradient summed between the ends before the
  // reduce-scatter), and pp = 4 interleaved.
  const auto a = train(
      recipe("tied_pp2_zero", kTrain20),
      tied + layout_flags(1, 2, "1f1b") + " --set optim.zero=1 --set parallel.bucket_mb=0.01", 4);
  ASSERT_EQ(a.status, 0) << a.output;
  expect_same_training(run_dir("tied_pp2_zero") + "/trace.h5", one, "tied pp2 zero", kTolerance);
  const auto b = train(recipe("tied_pp4", kTrain20), tied + layout_flags(1, 4, "interleaved"), 4);
  ASSERT_EQ(b.status, 0) << b.output;
  expect_same_training(run_dir("tied_pp4") + "/trace.h5", one, "tied pp4", kTolerance);
}

TEST_F(PipelineTraining, CheckpointsMoveBetweenPipelineAndOtherLayouts) {
  ASSERT_EQ(train(recipe("reference", kTrain20), kModel).status, 0);
  const auto one = series(run_dir("reference") + "/trace.h5", "train/loss");
  // Trains `from` on (tp, pp, dp), then resumes its step-10 checkpoint as `to` on another layout:
  // steps 11 to 20 continue one process's losses.
  struct Move {
    int tp, pp, dp, to_tp, to_pp, to_dp;
  };
  for (const Move m : {Move{2, 2, 1, 1, 1, 4}, Move{1, 2, 1, 2, 1, 1}, Move{1, 1, 2, 1, 2, 1}}) {
    const std::string from =
        "from_" + std::to_string(m.tp) + std::to_string(m.pp) + std::to_string(m.dp);
    const std::string to =
        from + "_to_" + std::to_string(m.to_tp) + std::to_string(m.to_pp) + std::to_string(m.to_dp);
    const auto a = train(recipe(from, kTrain20), kModel + layout_flags(m.tp, m.pp, "1f1b"),
                         m.tp * m.pp * m.dp);
    ASSERT_EQ(a.status, 0) << a.output;
    const auto b = train(recipe(to, kTrain20),
                         kModel + layout_flags(m.to_tp, m.to_pp, "1f1b") + " --resume " +
                             checkpoint_path(run_dir(from), 10),
                         m.to_tp * m.to_pp * m.to_dp);
    ASSERT_EQ(b.status, 0) << b.output;
    expect_series_close(series(run_dir(to) + "/trace.h5", "train/loss"), one, 10, to, kTolerance);
  }
}

TEST_F(PipelineTraining, OneFOneBKeepsLessActivationMemoryThanGPipe) {
  // Eight micro-batches on two stages: GPipe keeps all eight in flight on each stage, 1F1B at most
  // two on the first and one on the last.
  const std::string flags = kModel + "--set train.global_batch=16 --set train.steps=3 ";
  std::vector<double> peak[2];
  int i = 0;
  for (const std::string schedule : {"gpipe", "1f1b"}) {
    const std::string name = "memory_" + schedule;
    const auto r = train(recipe(name, kTrain20), flags + layout_flags(1, 2, schedule), 2);
    ASSERT_EQ(r.status, 0) << r.output;
    for (int s = 0; s < 2; ++s)
      peak[i].push_back(
          series(run_dir(name) + "/trace.h5", "train/stage_activation_bytes_" + std::to_string(s))
              .back());
    ++i;
  }
  for (int s = 0; s < 2; ++s) {
    EXPECT_GT(peak[0][s], 0.0);
    EXPECT_LT(peak[1][s], 0.6 * peak[0][s]) << "stage " << s;
  }
}

TEST_F(PipelineTraining, LayersThatCannotBeSplitAreOneRecipeError) {
  // Two layers over four stages: every rank says so and exits 2.
  const auto r = train(recipe("too_deep", kTrain20), layout_flags(1, 4, "1f1b"), 4);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("parallel.pp: pp x virtual_stages = 4 stages cannot exceed "
                          "model.n_layers (2)"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace ladder
