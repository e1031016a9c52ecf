#include "data/loader.h"

#include <cmath>
#include <limits>

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

MixtureSampler::MixtureSampler(const std::vector<uint64_t>& tokens, std::vector<double> weights,
                               std::vector<std::string> names, int64_t seq_len,
                               int64_t global_batch, uint64_t seed)
    : weights_(std::move(weights)), seq_len_(seq_len), global_batch_(global_batch), seed_(seed) {
  if (seq_len < 1 || global_batch < 1)
    throw Error("loader", "seq_len and global_batch must be positive");
  if (tokens.size() != weights_.size() || names.size() != weights_.size() || weights_.empty())
    throw Error("data.weights", "needs one weight per data.mixture source");
  double sum = 0;
  for (double w : weights_) {
    if (!(w >= 0) || !std::isfinite(w)) throw Error("data.weights", "must be finite and >= 0");
    sum += w;
  }
  if (!(sum > 0)) throw Error("data.weights", "are all 0: no source to draw from");
  double rest = 1;
  for (size_t k = 0; k < weights_.size(); ++k) {
    weights_[k] /= sum;
    const uint64_t windows = tokens[k] > 1 ? (tokens[k] - 1) / seq_len : 0;
    if (weights_[k] > 0 && windows == 0)
      throw Error("data.mixture",
                  names[k] + ": its training split holds " + std::to_string(tokens[k]) +
                      " tokens, too few for one window of " + std::to_string(seq_len + 1));
    windows_.push_back(windows);
    keys_.push_back(hash_words(seed, fnv1a64(names[k])));
  }
  // p of each source: its weight over what is left; the last source with weight takes the rest.
  size_t last = 0;
  for (size_t k = 0; k < weights_.size(); ++k)
    if (weights_[k] > 0) last = k;
  for (size_t k = 0; k < weights_.size(); ++k) {
    take_.push_back(k == last ? 1.0 : (rest > 0 ? std::min(1.0, weights_[k] / rest) : 0.0));
    rest -= weights_[k];
  }
}

std::pair<size_t, uint64_t> MixtureSampler::assign(uint64_t i) const {
  uint64_t j = i;  // the samples that reach source k before this one
  for (size_t k = 0;; ++k) {
    const double p = take_[k];
    if (p >= 1) return {k, j};
    const auto before = static_cast<uint64_t>(std::floor(static_cast<double>(j) * p + 0.5));
    const auto after = static_cast<uint64_t>(std::floor(static_cast<double>(j + 1) * p + 0.5));
    if (after > before) return {k, before};
    j -= before;  // the samples source k took; the rest reach source k + 1
  }
}

MixtureSampler::Window MixtureSampler::window(int64_t step, int64_t row) const {
  const uint64_t i = static_cast<uint64_t>(step) * static_cast<uint64_t>(global_batch_) +
                     static_cast<uint64_t>(row);
  const auto [k, m] = assign(i);
  const uint64_t epoch = m / windows_[k];
  const uint64_t window =
      feistel_permute(m % windows_[k], windows_[k], hash_words(keys_[k], epoch));
  return {k, window * static_cast<uint64_t>(seq_len_)};
}

DataLoader::DataLoader(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len,
                       int64_t global_batch, uint64_t seed)
    : datasets_{std::move(dataset)},
      seq_len_(seq_len),
      global_batch_(global_batch),
      sampler_(std::make_unique<WindowSampler>(datasets_[0]->size(), seq_len, global_batch, seed)) {
}

DataLoader::DataLoader(std::vector<MixtureSource> sources, int64_t seq_len, int64_t global_batch,
                       uint64_t seed)
    : seq_len_(seq_len), global_batch_(global_batch) {
  std::vector<uint64_t> tokens;
  std::vector<double> weights;
  std::vector<std::string> names;
  for (const auto& s : sources) {
    if (s.dataset->meta().tokenizer_identity != sources[0].dataset->meta().tokenizer_identity)
      throw Error("data.mixture", s.name + " was made with another tokenizer (" +
                                      s.dataset->meta().tokenizer_identity + ") than " +
                                      sources[0].name + " (" +
                                      sources[0].dataset->meta().tokenizer_identity + ")");
    datasets_.push_back(s.dataset);
    tokens.push_back(s.dataset->size());
    weights.push_back(s.weight);
    names.push_back(s.name);
  }
  mixture_ = std::make_unique<MixtureSampler>(tokens, std::move(weights), std::move(names), seq_len,
                                              global_batch, seed);
}

torch::Tensor DataLoader::rows(int64_t step, int64_t first_row, int64_t count) const {
  torch::Tensor out = torch::empty({count, seq_len_ + 1}, torch::kInt64);
  rows_into(step, first_row, out);
  return out;
}

void DataLoader::rows_into(int64_t step, int64_t first_row, const torch::Tensor& out) const {
  const int64_t width = seq_len_ + 1, count = out.dim() == 2 ? out.size(0) : -1;
  if (first_row < 0 || count < 0 || first_row + count > global_batch_)
    throw std::out_of_range("DataLoader::rows outside the global batch");
  if (out.size(1) != width || out.scalar_type() != torch::kInt64 || !out.is_contiguous() ||
      !out.device().is_cpu())
    throw std::invalid_argument("DataLoader::rows_into: not a contiguous int64 CPU [count, " +
                                std::to_string(width) + "] tensor");
  int64_t* data = out.data_ptr<int64_t>();
  for (int64_t r = 0; r < count; ++r) {
    if (sampler_) {
      datasets_[0]->copy(sampler_->window_start(step, first_row + r), width, data + r * width);
    } else {
      const auto w = mixture_->window(step, first_row + r);
      datasets_[w.source]->copy(w.start, width, data + r * width);
    }
  }
  // A flipped bit in a shard would otherwise surface as an index error deep inside the embedding.
  const int64_t vocab = datasets_[0]->meta().vocab_size;
  for (int64_t i = 0; i < count * width; ++i) {
    if (data[i] < 0 || data[i] >= vocab)
      throw Error("data", "corrupt token shard: token id " + std::to_string(data[i]) +
                              " is outside the vocabulary (" + std::to_string(vocab) + ")");
  }
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

namespace ladder::data {

double bytes_per_token(const TokenDataset& dataset, const Tokenizer& tokenizer, int64_t seq_len,
                       int64_t windows) {
  const auto count = static_cast<uint64_t>(windows * seq_len);
  if (count == 0) return std::numeric_limits<double>::quiet_NaN();
  std::vector<int64_t> ids(count);
  dataset.copy(1, count, ids.data());
  std::vector<TokenId> tokens;  // the end-of-document token separates texts; it is none of them
  for (int64_t id : ids)
    if (id != static_cast<int64_t>(tokenizer.eod_id())) tokens.push_back(static_cast<TokenId>(id));
  return static_cast<double>(tokenizer.decode(tokens).size()) / static_cast<double>(count);
}

}  // namespace ladder::data
