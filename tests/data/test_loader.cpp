#include "data/loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

// rows_into writes rows() into the caller's buffer (the trainer's pinned memory) and refuses one
// that is not a contiguous int64 [count, seq_len + 1] CPU tensor inside the batch.
TEST_F(LoaderTest, RowsIntoWritesTheRowsIntoTheCallersBuffer) {
  DataLoader loader(dataset_, 32, 8, /*seed=*/11);
  torch::Tensor out = torch::full({3, 33}, -1, torch::kInt64);
  loader.rows_into(5, 2, out);
  EXPECT_TRUE(torch::equal(out, loader.rows(5, 2, 3)));
  EXPECT_THROW(loader.rows_into(5, 6, out), std::out_of_range);  // rows 6..8 of 8
  EXPECT_THROW(loader.rows_into(5, 0, torch::empty({3, 32}, torch::kInt64)), std::invalid_argument);
  EXPECT_THROW(loader.rows_into(5, 0, torch::empty({3, 33}, torch::kInt32)), std::invalid_argument);
  EXPECT_THROW(loader.rows_into(5, 0, torch::empty({33, 3}, torch::kInt64).t()),
               std::invalid_argument);
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
  const WindowSampler sampler(dataset_->size(), 16, 4, 3);
  const torch::Tensor rows = loader.rows(5, 0, 4);
  for (int64_t r = 0; r < 4; ++r) {
    const uint64_t start = sampler.window_start(5, r);
    std::vector<int64_t> expected(17);
    dataset_->copy(start, 17, expected.data());
    EXPECT_TRUE(torch::equal(rows[r], torch::tensor(expected)));
  }
  EXPECT_THROW(loader.rows(0, 2, 3), std::out_of_range);
}

TEST(MixtureSampler, EveryPrefixHoldsTheWeightsShareAndEverySourceIsReadInOrder) {
  // Uneven weights, a zero one, more sources than a batch divides into.
  const std::vector<double> weights = {0.5, 0.0, 0.27, 0.13, 0.1};
  const std::vector<uint64_t> tokens = {10001, 5001, 3001, 2001, 901};
  const MixtureSampler s(tokens, {5, 0, 2.7, 1.3, 1}, {"a", "b", "c", "d", "e"}, 10, 7, 3);
  for (size_t k = 0; k < weights.size(); ++k)
    EXPECT_NEAR(s.weights()[k], weights[k], 1e-12);
  std::vector<uint64_t> count(weights.size(), 0);
  for (uint64_t i = 0; i < 20000; ++i) {
    const auto [k, m] = s.assign(i);
    ASSERT_LT(k, weights.size());
    EXPECT_EQ(m, count[k]) << "sample " << i;  // each source's samples in order, none skipped
    ++count[k];
    // Among the first i + 1 samples each source holds its share to within one per source before
    // it in the chain.
    for (size_t j = 0; j < weights.size(); ++j)
      ASSERT_LE(std::abs(static_cast<double>(count[j]) - weights[j] * static_cast<double>(i + 1)),
                static_cast<double>(j) + 0.5 + 1e-9)
          << "source " << j << " after " << i + 1;
  }
  EXPECT_EQ(count[1], 0u);  // a weight of 0 is never drawn
}

TEST(MixtureSampler, EachSourceVisitsEveryOneOfItsWindowsPerEpoch) {
  const MixtureSampler s({1001, 301}, {0.7, 0.3}, {"big", "small"}, 10, 8, 9);
  std::vector<std::vector<uint64_t>> seen(2);
  for (int64_t step = 0; step < 100; ++step)
    for (int64_t row = 0; row < 8; ++row) {
      const auto w = s.window(step, row);
      EXPECT_EQ(w.start % 10, 0u);
      EXPECT_LE(w.start + 11, w.source == 0 ? 1001u : 301u);
      seen[w.source].push_back(w.start / 10);
    }
  for (size_t k = 0; k < 2; ++k) {
    const size_t windows = k == 0 ? 100 : 30;
    ASSERT_GE(seen[k].size(), 2 * windows);
    for (size_t epoch = 0; epoch < 2; ++epoch) {
      const std::set<uint64_t> once(seen[k].begin() + epoch * windows,
                                    seen[k].begin() + (epoch + 1) * windows);
      EXPECT_EQ(once.size(), windows) << "source " << k << " epoch " << epoch;
    }
  }
}

TEST(MixtureSampler, RefusesBadWeightsAndSourcesTooSmall) {
  EXPECT_THROW(MixtureSampler({100, 100}, {-1, 2}, {"a", "b"}, 10, 1, 0), Error);
  EXPECT_THROW(MixtureSampler({100, 100}, {0, 0}, {"a", "b"}, 10, 1, 0), Error);
  EXPECT_THROW(MixtureSampler({100, 100}, {1}, {"a", "b"}, 10, 1, 0), Error);
  EXPECT_THROW(MixtureSampler({100, 5}, {1, 1}, {"a", "b"}, 10, 1, 0), Error);
  EXPECT_NO_THROW(MixtureSampler({100, 5}, {1, 0}, {"a", "b"}, 10, 1, 0));  // never drawn
}

// Two domains whose documents are all 'a' or all 'b': every row is one domain's.
class MixtureLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string jsonl;
    for (int d = 0; d < 300; ++d) {
      const char c = d % 3 == 0 ? 'b' : 'a';
      jsonl += "{\"text\": \"" + std::string(40 + d % 17, c) + "\", \"domain\": \"" +
               std::string(1, c) + "\"}\n";
    }
    testing::write_file(dir_.path("c.jsonl"), jsonl);
    PrepOptions o;
    o.inputs = {dir_.path("c.jsonl")};
    o.out_dir = dir_.path("ds");
    o.domain_field = "domain";
    o.val_fraction = 0.05;
    o.shard_tokens = 700;
    run_prep(o);
    a_ = std::make_shared<TokenDataset>(o.out_dir, "train", std::vector<std::string>{"a"});
    b_ = std::make_shared<TokenDataset>(o.out_dir, "train", std::vector<std::string>{"b"});
  }
  // 'a' or 'b': the one letter of a row (the end-of-document id aside).
  static char letter_of(const torch::Tensor& row) {
    std::set<int64_t> ids;
    for (int64_t i = 0; i < row.numel(); ++i)
      if (row[i].item<int64_t>() != 256) ids.insert(row[i].item<int64_t>());
    return ids.size() == 1 ? static_cast<char>(*ids.begin()) : '?';
  }
  TempDir dir_;
  std::shared_ptr<TokenDataset> a_, b_;
};

TEST_F(MixtureLoaderTest, RowsComeFromTheirSourcesInTheWeightsShares) {
  const int64_t seq = 16, batch = 10;
  for (double wa : {0.0, 0.3, 0.75, 1.0}) {
    DataLoader loader({{"a", a_, wa}, {"b", b_, 1 - wa}}, seq, batch, 5);
    int64_t as = 0, rows = 0;
    for (int64_t step = 0; step < 40; ++step) {
      const torch::Tensor t = loader.rows(step, 0, batch);
      for (int64_t r = 0; r < batch; ++r, ++rows) {
        const char c = letter_of(t[r]);
        ASSERT_TRUE(c == 'a' || c == 'b') << "a row mixes sources";
        as += c == 'a';
      }
    }
    EXPECT_NEAR(static_cast<double>(as) / static_cast<double>(rows), wa, 1.0 / rows + 1e-9);
  }
}

TEST_F(MixtureLoaderTest, EveryLayoutAndAResumeSeeTheSameRows) {
  const int64_t seq = 12, batch = 12;
  DataLoader whole({{"a", a_, 0.4}, {"b", b_, 0.6}}, seq, batch, 7);
  for (int64_t step : {0, 3, 99}) {
    const torch::Tensor expected = whole.rows(step, 0, batch);
    for (int world : {2, 3, 4}) {
      std::vector<torch::Tensor> parts;
      for (int rank = 0; rank < world; ++rank) {
        DataLoader fresh({{"a", a_, 0.4}, {"b", b_, 0.6}}, seq, batch, 7);
        parts.push_back(fresh.rows(step, rank * batch / world, batch / world));
      }
      EXPECT_TRUE(torch::equal(torch::cat(parts), expected)) << "step " << step;
    }
  }
  // Other weights, another order.
  DataLoader other({{"a", a_, 0.5}, {"b", b_, 0.5}}, seq, batch, 7);
  EXPECT_FALSE(torch::equal(other.rows(0, 0, batch), whole.rows(0, 0, batch)));
}

TEST_F(MixtureLoaderTest, BytesPerTokenCountsTheTextOfTheTargets) {
  // The bytes tokenizer: one byte per token, the end-of-document tokens none.
  const auto tok = load_dataset_tokenizer(dir_.path("ds"), a_->meta());
  std::vector<int64_t> ids(16 * 3);
  a_->copy(1, ids.size(), ids.data());
  const double text = static_cast<double>(
      std::count_if(ids.begin(), ids.end(), [](int64_t id) { return id != 256; }));
  EXPECT_DOUBLE_EQ(bytes_per_token(*a_, *tok, 16, 3), text / static_cast<double>(ids.size()));
  EXPECT_LT(bytes_per_token(*a_, *tok, 16, 3), 1.0);
}

}  // namespace
}  // namespace ladder::data
