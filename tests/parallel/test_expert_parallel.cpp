// Expert-parallel dispatch and combine (parallel/expert_parallel.h) with the whole world as the ep
// group (under mpirun with 2 and 4 ranks): every rank builds every rank's rows from one seed, so it
// can check that its experts receive exactly the rows routed to them, in expert order, that the
// combine brings each rank's rows back in place, and that gradients take the way back. Uneven
// loads, and experts (and ranks) that receive nothing, on purpose.
#include <gtest/gtest.h>

#include "parallel/communicator.h"
#include "parallel/expert_parallel.h"

namespace ladder::parallel {
namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

TEST(ExpertParallel, DispatchDeliversEachExpertsRowsAndCombineBringsThemBack) {
  const Communicator world = Communicator::world();
  const int ranks = world.size(), rank = world.rank();
  const int64_t local = 2, experts = local * ranks, width = 3;
  CommStats stats;
  const ExpertParallel ep{&world, &stats};
  // Rank s routes (s + e) % 3 rows to expert e, except that nobody routes to the last rank's
  // experts (it receives no rows at all).
  auto load_of = [&](int s) {
    std::vector<int64_t> load(experts);
    for (int64_t e = 0; e < experts; ++e)
      load[e] = e >= experts - local ? 0 : (s + e) % 3;
    return torch::tensor(load, torch::kInt64);
  };
  // Rank s's rows, sorted by expert: row i = (s, i, expert) in its three columns.
  auto rows_of = [&](int s) {
    const torch::Tensor load = load_of(s);
    std::vector<torch::Tensor> rows;
    int64_t i = 0;
    for (int64_t e = 0; e < experts; ++e)
      for (int64_t k = 0; k < load[e].item<int64_t>(); ++k, ++i)
        rows.push_back(torch::tensor({double(s), double(i), double(e)}, kF64));
    return rows.empty() ? torch::zeros({0, width}, kF64) : torch::stack(rows);
  };

  const ExpertDispatch plan = plan_dispatch(load_of(rank), experts, ep);
  const torch::Tensor mine = rows_of(rank).requires_grad_(true);
  const torch::Tensor received = dispatch_rows(mine, plan, ep);
  // Expected: for each of my experts in order, the rows of every source rank in rank order.
  std::vector<torch::Tensor> expected;
  std::vector<int64_t> expected_load(local, 0);
  for (int64_t e = rank * local; e < (rank + 1) * local; ++e)
    for (int s = 0; s < ranks; ++s) {
      const torch::Tensor rows = rows_of(s);
      for (int64_t i = 0; i < rows.size(0); ++i)
        if (rows[i][2].item<double>() == static_cast<double>(e)) {
          expected.push_back(rows[i]);
          ++expected_load[e - rank * local];
        }
    }
  ASSERT_EQ(received.size(0), static_cast<int64_t>(expected.size()));
  if (!expected.empty()) EXPECT_TRUE(torch::equal(received, torch::stack(expected)));
  EXPECT_TRUE(torch::equal(plan.local_load, torch::tensor(expected_load, torch::kInt64)));
  if (rank == ranks - 1) EXPECT_EQ(received.size(0), 0);

  // An "expert" that scales its rows by 1 + the expert id, then the way back.
  const torch::Tensor scaled = received * (1 + received.select(1, 2).detach()).unsqueeze(1);
  const torch::Tensor back = combine_rows(scaled, plan, ep);
  const torch::Tensor expect_back = mine.detach() * (1 + mine.detach().select(1, 2)).unsqueeze(1);
  ASSERT_EQ(back.sizes(), mine.sizes());
  EXPECT_TRUE(torch::equal(back, expect_back)) << "rank " << rank;
  back.sum().backward();  // every rank, even one without rows, takes part in the backward
  EXPECT_TRUE(
      torch::equal(mine.grad(), (1 + mine.detach().select(1, 2)).unsqueeze(1).expand_as(mine)));
  EXPECT_EQ(stats.collectives, 4);  // dispatch and combine, forward and backward
}

}  // namespace
}  // namespace ladder::parallel
