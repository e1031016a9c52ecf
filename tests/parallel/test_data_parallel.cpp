// Runs under mpirun with the communicator suite (2 and 4 ranks). Every rank builds the same
// parameters, computes a gradient that depends on its rank, and the reduced gradients, shards and
// gathered parameters are checked against what each rank can compute alone.
#include <gtest/gtest.h>

#include "parallel/data_parallel.h"

namespace ladder::parallel {
namespace {

// Parameters of awkward sizes, so buckets end mid-way and shards cut tensors.
std::vector<torch::Tensor> make_params() {
  std::vector<torch::Tensor> params;
  torch::manual_seed(11);
  for (std::vector<int64_t> shape : {std::vector<int64_t>{7, 5}, {13}, {3, 4, 5}, {1}, {9, 9}})
    params.push_back(torch::randn(shape).requires_grad_(true));
  return params;
}

// What rank r's backward contributes to parameter k after micro-batch m: d/dp of sum(p * c).
torch::Tensor contribution(const torch::Tensor& p, size_t k, int r, int m) {
  return torch::full(p.sizes(), static_cast<double>(k + 1) * (r + 1) + 0.5 * m);
}

// Runs `micro` micro-batches of backward on this rank; returns how many collectives started during
// the backward passes (before finish_grad_sync).
int64_t backward(DataParallel& dp, const std::vector<torch::Tensor>& params, int rank, int micro) {
  dp.take_stats();
  dp.zero_grad();
  for (int m = 0; m < micro; ++m) {
    torch::Tensor loss = torch::zeros({});
    for (size_t k = 0; k < params.size(); ++k)
      loss = loss + (params[k] * contribution(params[k], k, rank, m)).sum();
    dp.before_backward(m == micro - 1);
    loss.backward();
  }
  const int64_t started = dp.take_stats().collectives;
  dp.finish_grad_sync();
  return started;
}

torch::Tensor reduced_reference(const torch::Tensor& p, size_t k, int ranks, int micro) {
  torch::Tensor sum = torch::zeros(p.sizes());
  for (int r = 0; r < ranks; ++r)
    for (int m = 0; m < micro; ++m)
      sum += contribution(p, k, r, m);
  return sum;
}

torch::Tensor flat_piece(const torch::Tensor& t, const FlatRange& r) {
  return t.detach().reshape(-1).narrow(0, r.offset, r.length);
}

TEST(DataParallel, GradientsAreSummedOverRanks) {
  const Communicator world = Communicator::world();
  for (const bool overlap : {true, false}) {
    for (const int64_t bucket_bytes : {int64_t{64}, int64_t{1} << 20}) {
      SCOPED_TRACE("overlap " + std::to_string(overlap) + ", bucket " +
                   std::to_string(bucket_bytes));
      auto params = make_params();
      DataParallel dp(params, world, {bucket_bytes, overlap, false, {}});
      if (bucket_bytes == 64) {
        EXPECT_GT(dp.bucket_count(), 2);
      }
      for (int step = 0; step < 2; ++step) {  // twice: buffers are reused, grads zeroed
        // With overlap every bucket starts inside the last backward pass (all its gradients are
        // produced there); without, all start afterwards.
        const int64_t started = backward(dp, params, world.rank(), 3);
        EXPECT_EQ(started, overlap && world.size() > 1 ? dp.bucket_count() : 0);
        for (size_t k = 0; k < params.size(); ++k)
          EXPECT_TRUE(
              torch::equal(params[k].grad(), reduced_reference(params[k], k, world.size(), 3)))
              << "parameter " << k << " step " << step;
      }
      ASSERT_EQ(dp.owned().size(), params.size());  // without ZeRO: everything, whole
      dp.take_stats();
      dp.zero_grad();
      dp.before_backward(true);
      dp.finish_grad_sync();
      const CommStats stats = dp.take_stats();
      EXPECT_EQ(stats.collectives, dp.bucket_count());
      // Ring model: an all-reduce of S bytes sends 2 (n - 1) / n x S per rank.
      int64_t bytes = 0;
      for (const auto& p : params)
        bytes += p.numel() * 4;
      const int n = world.size();
      EXPECT_GE(stats.bytes, 2 * (n - 1) * bytes / n);
      EXPECT_LE(stats.bytes, 2 * (n - 1) * (bytes + 4 * n * dp.bucket_count()) / n);
      EXPECT_EQ(dp.take_stats().bytes, 0);
    }
  }
}

TEST(DataParallel, ShardsPartitionEveryElementOnce) {
  const Communicator world = Communicator::world();
  auto params = make_params();
  DataParallel dp(params, world, {64, true, true, {}});
  EXPECT_TRUE(dp.sharded_optimizer() == (world.size() > 1));
  std::vector<torch::Tensor> hits;
  for (const auto& p : params)
    hits.push_back(torch::zeros({p.numel()}, torch::kInt64));
  for (const FlatRange& r : dp.shard())
    hits[r.tensor].narrow(0, r.offset, r.length) += 1;
  for (size_t k = 0; k < params.size(); ++k) {
    world.all_reduce(hits[k]);
    EXPECT_TRUE(torch::equal(hits[k], torch::ones({params[k].numel()}, torch::kInt64)))
        << "parameter " << k;
  }
  EXPECT_EQ(dp.owned(), dp.shard());
}

TEST(DataParallel, ZeroReduceScattersAndGathersParameters) {
  const Communicator world = Communicator::world();
  for (const bool overlap : {true, false}) {
    auto params = make_params();
    std::vector<torch::Tensor> handles = params;  // what a model holds: the same tensors
    DataParallel dp(params, world, {64, overlap, true, {}});
    backward(dp, params, world.rank(), 2);
    // The owned pieces hold the sum over ranks.
    for (const FlatRange& r : dp.owned())
      EXPECT_TRUE(torch::equal(
          flat_piece(params[r.tensor].grad(), r),
          flat_piece(reduced_reference(params[r.tensor], r.tensor, world.size(), 2), r)));
    // Each rank updates its pieces; the all-gather brings every update to every rank.
    {
      torch::NoGradGuard no_grad;
      for (const FlatRange& r : dp.owned())
        flat_piece(params[r.tensor], r).fill_(100.0 + world.rank());
    }
    dp.gather_params();
    std::vector<torch::Tensor> owner;
    for (const auto& p : params)
      owner.push_back(torch::full({p.numel()}, -1.0));
    for (const FlatRange& r : dp.owned())
      owner[r.tensor].narrow(0, r.offset, r.length).fill_(100.0 + world.rank());
    for (size_t k = 0; k < params.size(); ++k) {
      world.all_reduce(owner[k], ReduceOp::Max);
      EXPECT_TRUE(torch::equal(handles[k].detach().reshape(-1), owner[k])) << "parameter " << k;
    }
  }
}

TEST(DataParallel, ParametersKeepTheirValuesAndIdentity) {
  const Communicator world = Communicator::world();
  auto params = make_params();
  const auto before = make_params();  // same seed: same values
  std::vector<torch::Tensor> handles = params;
  DataParallel dp(params, world, {1 << 20, true, false, {}});
  for (size_t k = 0; k < params.size(); ++k) {
    EXPECT_TRUE(torch::equal(handles[k], before[k]));
    EXPECT_TRUE(handles[k].requires_grad());
    EXPECT_TRUE(handles[k].is_leaf());
  }
}

}  // namespace
}  // namespace ladder::parallel
