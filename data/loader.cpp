#include "data/loader.h"

#include "core/error.h"
#include "core/hash.h"

namespace ladder::data {

uint64_t feistel_permute(uint64_t index, uint64_t n, uint64_t key) {
  if (n <= 1) return 0;
  int bits = 64 - __builtin_clzll(n - 1);  // domain 2^bits >= n
  bits += bits & 1;                        // even, for two equal halves
  const int half = bits / 2;
  const uint64_t mask = (uint64_t{1} << half) - 1;
  uint64_t x = index;
  do {  // cycle walking: re-encrypt until the value lands inside [0, n); at most ~4 rounds expected
    uint64_t left = x >> half, right = x & mask;
    for (uint64_t round = 0; round < 6; ++round) {
      const uint64_t f = hash_words(key, round, right) & mask;
      const uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    x = (left << half) | right;
  } while (x >= n);
  return x;
}

WindowSampler::WindowSampler(uint64_t dataset_tokens, int64_t seq_len, int64_t global_batch,
                             uint64_t seed)
    : windows_(dataset_tokens > 1 && seq_len > 0 ? (dataset_tokens - 1) / seq_len : 0),
      seq_len_(seq_len),
      global_batch_(global_batch),
      seed_(seed) {
  if (seq_len < 1 || global_batch < 1)
    throw Error("loader", "seq_len and global_batch must be positive");
  if (windows_ == 0)
    throw Error("data.seq_len", "the training split holds " + std::to_string(dataset_tokens) +
                                    " tokens, too few for one window of " +
                                    std::to_string(seq_len + 1));
}

uint64_t WindowSampler::window_start(int64_t step, int64_t row) const {
  const uint64_t i = static_cast<uint64_t>(step) * static_cast<uint64_t>(global_batch_) +
                     static_cast<uint64_t>(row);
  const uint64_t epoch = i / windows_;
  const uint64_t window = feistel_permute(i % windows_, windows_, hash_words(seed_, epoch));
  return window * static_cast<uint64_t>(seq_len_);
}

DataLoader::DataLoader(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len,
                       int64_t global_batch, uint64_t seed)
    : dataset_(std::move(dataset)), sampler_(dataset_->size(), seq_len, global_batch, seed) {}

torch::Tensor DataLoader::rows(int64_t step, int64_t first_row, int64_t count) const {
  if (first_row < 0 || count < 0 || first_row + count > sampler_.global_batch())
    throw std::out_of_range("DataLoader::rows outside the global batch");
  const int64_t width = sampler_.seq_len() + 1;
  torch::Tensor out = torch::empty({count, width}, torch::kInt64);
  int64_t* data = out.data_ptr<int64_t>();
  for (int64_t r = 0; r < count; ++r) {
    dataset_->copy(sampler_.window_start(step, first_row + r), width, data + r * width);
  }
  // A flipped bit in a shard would otherwise surface as an index error deep inside the embedding.
  const int64_t vocab = dataset_->meta().vocab_size;
  for (int64_t i = 0; i < count * width; ++i) {
    if (data[i] < 0 || data[i] >= vocab)
      throw Error("data", "corrupt token shard: token id " + std::to_string(data[i]) +
                              " is outside the vocabulary (" + std::to_string(vocab) + ")");
  }
  return out;
}

}  // namespace ladder::data

namespace ladder::data {

int64_t sequential_window_count(const TokenDataset& dataset, int64_t seq_len) {
  return dataset.size() > 1 ? static_cast<int64_t>((dataset.size() - 1) / seq_len) : 0;
}

torch::Tensor sequential_windows(const TokenDataset& dataset, int64_t seq_len, int64_t first,
                                 int64_t count) {
  const int64_t width = seq_len + 1;
  torch::Tensor out = torch::empty({count, width}, torch::kInt64);
  for (int64_t r = 0; r < count; ++r)
    dataset.copy(static_cast<uint64_t>((first + r) * seq_len), width,
                 out.data_ptr<int64_t>() + r * width);
  return out;
}

}  // namespace ladder::data
