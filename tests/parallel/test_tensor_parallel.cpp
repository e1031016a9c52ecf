// Each tensor-parallel layer against its plain LibTorch counterpart, forward and backward, with the
// whole world as the tensor-parallel group (run under mpirun with 2 and 4 ranks by
// test_communicator). Every rank builds the same full tensors from one seed, keeps its block, and
// compares its outputs and gradients with the matching block of the plain computation. fp64, so
// that the comparisons are tight.
#include <gtest/gtest.h>
#include <mpi.h>

#include "models/dense.h"
#include "optim/parametrization.h"
#include "parallel/communicator.h"
#include "parallel/tensor_parallel.h"

namespace ladder::parallel {
namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

// Rank r's block of `full` along `dim` (of size n x block).
torch::Tensor block(const torch::Tensor& full, int64_t dim, int rank, int ranks) {
  const int64_t size = full.size(dim) / ranks;
  return full.narrow(dim, rank * size, size);
}

torch::Tensor leaf(const torch::Tensor& t) {
  return t.detach().clone().requires_grad_(true);
}

void expect_close(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_TRUE(torch::allclose(a, b, 1e-10, 1e-12))
      << what << ": max difference " << (a - b).abs().max().item<double>();
}

struct Case {
  bool sequence_parallel;
};

class TensorParallelLayers : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    world_ = std::make_unique<Communicator>(MPI_COMM_WORLD, "world");
    tp_ = TensorParallel{world_.get(), GetParam().sequence_parallel};
    n_ = world_->size(), me_ = world_->rank();
    torch::manual_seed(7);
  }
  // The tokens [tokens, features] a layer sees: all of them, or this rank's block of them.
  torch::Tensor local_tokens(const torch::Tensor& full) const {
    return tp_.sequence_parallel ? block(full, 0, me_, n_) : full;
  }
  std::unique_ptr<Communicator> world_;
  TensorParallel tp_;
  int n_ = 1, me_ = 0;
};

TEST_P(TensorParallelLayers, ColumnThenRowEqualThePlainMlp) {
  // x -> column (W1 [hidden, d]) -> tanh -> row (W2 [d, hidden]) -> y, as attention and the MLP use
  // them: one reduction forward (all-reduce, or reduce-scatter with sequence parallelism).
  const int64_t tokens = 4 * n_, d = 6, hidden = 4 * n_;
  const torch::Tensor x_full = torch::randn({tokens, d}, kF64);
  const torch::Tensor w1_full = torch::randn({hidden, d}, kF64),
                      w2_full = torch::randn({d, hidden}, kF64);
  const torch::Tensor r = torch::randn({tokens, d}, kF64);  // weights of the scalar objective

  // Plain.
  const torch::Tensor x_ref = leaf(x_full), w1_ref = leaf(w1_full), w2_ref = leaf(w2_full);
  const torch::Tensor y_ref =
      torch::matmul(torch::tanh(torch::matmul(x_ref, w1_ref.t())), w2_ref.t());
  (y_ref * r).sum().backward();

  // Split: W1 by rows, W2 by columns.
  const torch::Tensor x = leaf(local_tokens(x_full));
  const ColumnParallelLinear column{leaf(block(w1_full, 0, me_, n_)), tp_};
  const RowParallelLinear row{leaf(block(w2_full, 1, me_, n_)), tp_};
  const torch::Tensor y = row.forward(torch::tanh(column.forward(x)));
  expect_close(y, local_tokens(y_ref.detach()), "output");
  // Each rank's share of the objective: all of it (the output is replicated), or its tokens' part.
  (y * local_tokens(r)).sum().backward();

  expect_close(x.grad(), local_tokens(x_ref.grad()), "input gradient");
  expect_close(column.weight.grad(), block(w1_ref.grad(), 0, me_, n_), "column weight gradient");
  expect_close(row.weight.grad(), block(w2_ref.grad(), 1, me_, n_), "row weight gradient");
}

TEST_P(TensorParallelLayers, VocabParallelEmbeddingEqualsThePlainLookup) {
  const int64_t vocab = 5 * n_, d = 3, tokens = 6 * n_;
  const torch::Tensor e_full = torch::randn({vocab, d}, kF64);
  const torch::Tensor ids = torch::randint(0, vocab, {tokens});
  const torch::Tensor r = torch::randn({tokens, d}, kF64);
  const torch::Tensor e_ref = leaf(e_full);
  const torch::Tensor y_ref = torch::embedding(e_ref, ids);
  (y_ref * r).sum().backward();

  const VocabParallelEmbedding embedding{leaf(block(e_full, 0, me_, n_)), tp_};
  const torch::Tensor y = embedding.forward(ids);
  expect_close(y, local_tokens(y_ref.detach()), "embedding");
  (y * local_tokens(r)).sum().backward();
  expect_close(embedding.weight.grad(), block(e_ref.grad(), 0, me_, n_), "embedding gradient");
}

INSTANTIATE_TEST_SUITE_P(Tp, TensorParallelLayers, ::testing::Values(Case{false}, Case{true}),
                         [](const auto& info) {
                           return info.param.sequence_parallel ? "SequenceParallel" : "Plain";
                         });

TEST(TensorParallelCrossEntropy, EqualsThePlainLossZLossAndGradientsWithPaddedVocabulary) {
  const Communicator world = Communicator::world();
  const int n = world.size(), me = world.rank();
  torch::manual_seed(3);
  // A vocabulary that does not divide by the group: padded up, the padding masked out.
  const int64_t vocab = 4 * n + 1, padded = (vocab + n - 1) / n * n, rows = 9;
  const torch::Tensor logits_full = torch::randn({rows, padded}, kF64) * 3;
  torch::Tensor targets = torch::randint(0, vocab, {rows});
  targets[0] = vocab - 1;  // the last real token, next to the padding
  const double z_weight = 0.1;

  // Plain: the real vocabulary only.
  const torch::Tensor ref = leaf(logits_full.narrow(1, 0, vocab));
  const torch::Tensor lse = torch::logsumexp(ref, -1);
  const torch::Tensor loss_ref = (lse - ref.gather(-1, targets.unsqueeze(-1)).squeeze(-1)).mean();
  const torch::Tensor z_ref = lse.square().mean();
  (loss_ref + z_weight * z_ref).backward();
  const torch::Tensor grad_ref =
      torch::cat({ref.grad(), torch::zeros({rows, padded - vocab}, kF64)}, 1);

  const torch::Tensor local = leaf(block(logits_full, 1, me, n));
  const auto out =
      vocab_parallel_cross_entropy(local, targets, TensorParallel{&world, false}, vocab);
  EXPECT_NEAR(out.loss.item<double>(), loss_ref.item<double>(), 1e-12);
  EXPECT_NEAR(out.z_loss.item<double>(), z_ref.item<double>(), 1e-10);
  (out.loss + z_weight * out.z_loss).backward();
  expect_close(local.grad(), block(grad_ref, 1, me, n), "logits gradient");
  // The padding columns (on the last rank) get no gradient.
  if (me == n - 1) {
    EXPECT_EQ(local.grad()
                  .narrow(1, local.size(1) - (padded - vocab), padded - vocab)
                  .abs()
                  .max()
                  .item<double>(),
              0.0);
  }
}

TEST(TensorParallelCrossEntropy, Bf16LogitsGiveAnFp32LossAndBf16Gradients) {
  const Communicator world = Communicator::world();
  torch::manual_seed(4);
  const int64_t columns = 8;
  const torch::Tensor logits = leaf(torch::randn({5, columns}).to(torch::kBFloat16));
  const torch::Tensor targets = torch::randint(0, columns * world.size(), {5});
  const auto out = vocab_parallel_cross_entropy(logits, targets, TensorParallel{&world, false});
  EXPECT_EQ(out.loss.scalar_type(), torch::kFloat32);
  out.loss.backward();
  EXPECT_EQ(logits.grad().scalar_type(), torch::kBFloat16);
}

}  // namespace
}  // namespace ladder::parallel

namespace ladder::parallel {
namespace {

// The dense model split over the world against the same model in one piece: the loss and every
// parameter's gradient (this rank's block of it, replicated ones whole: norm gains used on part of
// the data have their gradients summed over the group), in fp64.
TEST(TensorParallelDense, LossAndGradientsEqualOneProcess) {
  Communicator world(MPI_COMM_WORLD, "world");
  const int n = world.size();
  for (bool tied : {false, true}) {
    for (bool sp : {false, true}) {
      SCOPED_TRACE(std::string(tied ? "tied" : "untied") + (sp ? ", sequence parallel" : ""));
      models::ModelConfig c;
      c.arch = models::Arch::Dense, c.d_model = 32, c.n_layers = 2, c.n_heads = 4,
      c.n_kv_heads = n == 4 ? 4 : 2;
      c.ffn_hidden = 24, c.norm_eps = 1e-5, c.rope_theta = 10000, c.qk_norm = true;
      c.tie_embeddings = tied, c.z_loss = 1e-2;
      const int64_t vocab = 11;  // padded to 12 at tp = 2 and 4
      auto build = [&](const TensorParallel& tp) {
        auto model = std::make_unique<models::DenseTransformer>(c, vocab, 8, tp);
        optim::initialize(model->params(), optim::param_settings(model->params().all(), {}), 5);
        for (auto& p : model->params().all()) {
          torch::NoGradGuard no_grad;
          p.value.set_data(p.value.to(torch::kFloat64));
        }
        return model;
      };
      auto whole = build({});
      auto split = build(TensorParallel{&world, sp});
      torch::manual_seed(9);
      const torch::Tensor x = torch::randint(0, vocab, {2, 8}),
                          y = torch::randint(0, vocab, {2, 8});
      const auto ref = whole->loss(x, y);
      ref.objective.backward();
      const auto out = split->loss(x, y);
      out.objective.backward();
      EXPECT_NEAR(out.loss.item<double>(), ref.loss.item<double>(), 1e-10);
      EXPECT_NEAR(out.z_loss.item<double>(), ref.z_loss.item<double>(), 1e-10);

      const auto& mine = split->params().all();
      const auto& theirs = whole->params().all();
      ASSERT_EQ(mine.size(), theirs.size());
      for (size_t i = 0; i < mine.size(); ++i) {
        const torch::Tensor grad = mine[i].value.grad();
        ASSERT_TRUE(grad.defined()) << mine[i].name;
        const torch::Tensor expected = models::local_block(mine[i], theirs[i].value.grad());
        expect_close(grad, expected, mine[i].name);
      }
    }
  }
}

}  // namespace
}  // namespace ladder::parallel
