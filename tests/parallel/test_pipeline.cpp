// The pipeline executor under mpirun (2 and 4 ranks, the whole world one pipeline): a toy model of
// one tanh(x W) layer per virtual stage, run by every schedule, against the same model computed in
// one process. Gradients must agree (the schedules accumulate micro-batches in the same order), the
// activations kept in flight must follow the schedule, and the evaluation's forward-only run must
// return the same losses.
#include <gtest/gtest.h>
#include <mpi.h>

#include "parallel/communicator.h"
#include "parallel/pipeline.h"

namespace ladder::parallel {
namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);
constexpr int64_t kRows = 3, kWidth = 8;

torch::Tensor weight_of(int virtual_stage) {  // the same on every rank
  return torch::randn({kWidth, kWidth},
                      torch::Generator(at::detail::createCPUGenerator(
                          static_cast<uint64_t>(virtual_stage) + 11)),
                      kF64) /
         std::sqrt(static_cast<double>(kWidth));
}
torch::Tensor data_of(int64_t microbatch) {
  return torch::randn(
      {kRows, kWidth},
      torch::Generator(at::detail::createCPUGenerator(static_cast<uint64_t>(microbatch) + 1000)),
      kF64);
}

struct Case {
  ScheduleKind kind;
  int chunks;
  int64_t microbatches;
};

class PipelineExecutor : public ::testing::TestWithParam<Case> {};

TEST_P(PipelineExecutor, GradientsAndLossesEqualOneProcess) {
  const Case c = GetParam();
  Communicator world(MPI_COMM_WORLD, "pp");
  const int p = world.size(), stage = world.rank();
  if (c.kind == ScheduleKind::Interleaved && c.microbatches % p != 0) GTEST_SKIP();
  const int stages = p * c.chunks;
  const double scale = 1.0 / static_cast<double>(c.microbatches);

  // One process: every micro-batch through every stage, loss = mean over micro-batches of the sum
  // of squares.
  std::vector<torch::Tensor> reference;
  for (int v = 0; v < stages; ++v)
    reference.push_back(weight_of(v).requires_grad_(true));
  std::vector<double> reference_losses;
  for (int64_t m = 0; m < c.microbatches; ++m) {
    torch::Tensor x = data_of(m);
    for (int v = 0; v < stages; ++v)
      x = torch::tanh(x.matmul(reference[v]));
    const torch::Tensor loss = x.pow(2).sum() * scale;
    reference_losses.push_back(loss.item<double>());
    loss.backward();
  }

  // The pipeline: this rank's chunks.
  std::vector<torch::Tensor> mine;
  for (int chunk = 0; chunk < c.chunks; ++chunk)
    mine.push_back(weight_of(chunk * p + stage).requires_grad_(true));
  const Pipeline pipeline(world, c.kind, c.chunks);
  std::vector<double> losses(c.microbatches, 0.0);
  int backwards = 0, last_flags = 0;
  PipelineStep step;
  step.microbatches = c.microbatches;
  step.activation_shape = [](int64_t) { return std::vector<int64_t>{kRows, kWidth}; };
  step.activation_options = kF64;
  step.forward = [&](int chunk, int64_t m, const torch::Tensor& input) {
    const torch::Tensor x = pipeline.first(chunk) ? data_of(m) : input;
    EXPECT_EQ(pipeline.first(chunk), !input.defined());
    const torch::Tensor y = torch::tanh(x.matmul(mine[chunk]));
    if (!pipeline.last(chunk)) return y;
    const torch::Tensor loss = y.pow(2).sum() * scale;
    losses[m] = loss.item<double>();
    return loss;
  };
  step.before_backward = [&](bool last) { ++backwards, last_flags += last; };
  const PipelineStats stats = pipeline.run(step);

  for (int chunk = 0; chunk < c.chunks; ++chunk) {
    const torch::Tensor& want = reference[chunk * p + stage].grad();
    ASSERT_TRUE(mine[chunk].grad().defined());
    EXPECT_TRUE(torch::allclose(mine[chunk].grad(), want, 1e-12, 1e-14))
        << "chunk " << chunk << ": max difference "
        << (mine[chunk].grad() - want).abs().max().item<double>();
  }
  if (stage == p - 1) {
    for (int64_t m = 0; m < c.microbatches; ++m)
      EXPECT_NEAR(losses[m], reference_losses[m], 1e-14);
  }
  EXPECT_EQ(backwards, c.microbatches * c.chunks);
  EXPECT_EQ(last_flags, 1);
  // In flight: what the schedule says, which for 1F1B is at most the stages and for GPipe all.
  EXPECT_EQ(stats.max_in_flight,
            max_in_flight(pipeline_schedule(c.kind, p, stage, c.microbatches, c.chunks)));
  if (c.kind == ScheduleKind::OneFOneB) {
    EXPECT_EQ(stats.max_in_flight, std::min<int64_t>(c.microbatches, p - stage));
  }
  if (c.kind == ScheduleKind::GPipe) {
    EXPECT_EQ(stats.max_in_flight, c.microbatches);
  }
  // Bytes sent: one activation per forward and one gradient per backward, but not past the ends.
  const int64_t message = kRows * kWidth * 8;
  int64_t messages = 0;
  for (int chunk = 0; chunk < c.chunks; ++chunk) {
    const int v = chunk * p + stage;
    messages += (v < stages - 1) + (v > 0);
  }
  EXPECT_EQ(stats.p2p_bytes, messages * c.microbatches * message);
  EXPECT_GE(stats.idle_seconds, 0.0);
  EXPECT_LE(stats.idle_seconds, stats.seconds);
  if (p > 1) {
    EXPECT_GT(stats.peak_activation_bytes, 0);
  }

  // Forward only (evaluation): the same losses, nothing kept.
  std::fill(losses.begin(), losses.end(), 0.0);
  torch::NoGradGuard no_grad;
  const PipelineStats eval = pipeline.run_forward(step);
  EXPECT_EQ(eval.max_in_flight, 0);
  if (stage == p - 1) {
    for (int64_t m = 0; m < c.microbatches; ++m)
      EXPECT_NEAR(losses[m], reference_losses[m], 1e-14);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Schedules, PipelineExecutor,
    ::testing::Values(Case{ScheduleKind::GPipe, 1, 1}, Case{ScheduleKind::GPipe, 1, 5},
                      Case{ScheduleKind::OneFOneB, 1, 1}, Case{ScheduleKind::OneFOneB, 1, 4},
                      Case{ScheduleKind::OneFOneB, 1, 7}, Case{ScheduleKind::Interleaved, 2, 4},
                      Case{ScheduleKind::Interleaved, 3, 8},
                      Case{ScheduleKind::Interleaved, 2, 12}));

}  // namespace
}  // namespace ladder::parallel
