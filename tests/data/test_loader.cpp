#include "data/loader.h"

#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "data/prep.h"
#include "test_util.h"

namespace ladder::data {
namespace {

using testing::TempDir;

TEST(FeistelPermute, IsABijectionForManySizes) {
  for (uint64_t n : {1ull, 2ull, 3ull, 7ull, 64ull, 1000ull, 4097ull}) {
    std::set<uint64_t> seen;
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t p = feistel_permute(i, n, 42);
      EXPECT_LT(p, n);
      seen.insert(p);
    }
    EXPECT_EQ(seen.size(), n);
  }
}

TEST(FeistelPermute, DependsOnTheKeyAndShuffles) {
  int same = 0, fixed = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    same += feistel_permute(i, 1000, 1) == feistel_permute(i, 1000, 2);
    fixed += feistel_permute(i, 1000, 1) == i;
  }
  EXPECT_LT(same, 20);  // about 1 expected by chance
  EXPECT_LT(fixed, 20);
}

TEST(WindowSampler, EachEpochVisitsEveryWindowOnce) {
  WindowSampler s(/*tokens=*/1001, /*seq_len=*/10, /*global_batch=*/7, /*seed=*/5);
  ASSERT_EQ(s.windows_per_epoch(), 100u);
  std::multiset<uint64_t> epoch0, epoch1;
  for (int64_t i = 0; i < 200; ++i) {
    const uint64_t start = s.window_start(i / 7, i % 7);
    EXPECT_EQ(start % 10, 0u);
    EXPECT_LE(start + 11, 1001u);
    (i < 100 ? epoch0 : epoch1).insert(start);
  }
  EXPECT_EQ(std::set<uint64_t>(epoch0.begin(), epoch0.end()).size(), 100u);
  EXPECT_EQ(std::set<uint64_t>(epoch1.begin(), epoch1.end()).size(), 100u);
  // A new epoch is a new order.
  EXPECT_NE(s.window_start(0, 0), s.window_start(100 / 7, 100 % 7));
}

TEST(WindowSampler, TooSmallDataset) {
  EXPECT_THROW(WindowSampler(10, 10, 1, 0), Error);
}

// A prepared bytes dataset split into several small shards, so windows cross shard boundaries.
class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string text;
    for (int d = 0; d < 200; ++d)
      text += "document number " + std::to_string(d) + " has some text in it.\n\n";
    testing::write_file(dir_.path("c.txt"), text);
    PrepOptions o;
    o.inputs = {dir_.path("c.txt")};
    o.out_dir = dir_.path("ds");
    o.val_fraction = 0.05;
    o.shard_tokens = 1000;
    run_prep(o);
    dataset_ = std::make_shared<TokenDataset>(o.out_dir, "train");
    ASSERT_GT(DatasetMeta::read(o.out_dir).train.shards.size(), 3u);
  }
  TempDir dir_;
  std::shared_ptr<TokenDataset> dataset_;
};

TEST_F(LoaderTest, GlobalBatchIsTheSameForEveryWorldSize) {
  const int64_t seq_len = 32, global_batch = 8;
  DataLoader loader(dataset_, seq_len, global_batch, /*seed=*/11);
  for (int64_t step : {0, 1, 17, 250}) {  // 250 steps is several epochs
    const torch::Tensor whole = loader.rows(step, 0, global_batch);
    ASSERT_EQ(whole.sizes(), (std::vector<int64_t>{global_batch, seq_len + 1}));
    for (int world : {2, 4, 8}) {
      std::vector<torch::Tensor> parts;
      const int64_t per_rank = global_batch / world;
      for (int rank = 0; rank < world; ++rank) {
        // Each simulated rank has its own loader, as separate processes would.
        DataLoader rank_loader(dataset_, seq_len, global_batch, 11);
        parts.push_back(rank_loader.rows(step, rank * per_rank, per_rank));
      }
      EXPECT_TRUE(torch::equal(torch::cat(parts), whole)) << "step " << step << " world " << world;
    }
  }
}

TEST_F(LoaderTest, ResumeNeedsOnlyTheStep) {
  DataLoader a(dataset_, 16, 4, 3);
  std::vector<torch::Tensor> run;
  for (int64_t step = 0; step < 10; ++step)
    run.push_back(a.rows(step, 0, 4));
  DataLoader resumed(dataset_, 16, 4, 3);  // a fresh process resuming at step 6
  for (int64_t step = 6; step < 10; ++step)
    EXPECT_TRUE(torch::equal(resumed.rows(step, 0, 4), run[step]));
  DataLoader other_seed(dataset_, 16, 4, 4);
  EXPECT_FALSE(torch::equal(other_seed.rows(0, 0, 4), run[0]));
}

TEST_F(LoaderTest, RowsAreContiguousTokensOfTheSplit) {
  DataLoader loader(dataset_, 16, 4, 3);
  const torch::Tensor rows = loader.rows(5, 0, 4);
  for (int64_t r = 0; r < 4; ++r) {
    const uint64_t start = loader.sampler().window_start(5, r);
    std::vector<int64_t> expected(17);
    dataset_->copy(start, 17, expected.data());
    EXPECT_TRUE(torch::equal(rows[r], torch::tensor(expected)));
  }
  EXPECT_THROW(loader.rows(0, 2, 3), std::out_of_range);
}

}  // namespace
}  // namespace ladder::data
