// The deterministic loader (DESIGN.md contract 4).
//
// The training split is one token sequence of T tokens, cut into W = (T - 1) / seq_len windows of
// seq_len + 1 tokens (inputs and shifted targets; neighbours share one token). The sample at
// (global step, row) is window
//     i = step * global_batch + row,   epoch = i / W,   window = permute_{seed, epoch}(i mod W)
// where permute is a keyed bijection of [0, W) (a Feistel network with cycle walking), so every
// epoch visits every window exactly once, in an order that depends only on (seed, epoch). Nothing
// depends on the number of ranks: a data-parallel rank simply asks for its rows of the global
// batch, and a resumed run needs only the step number.
//
// A mixture (data.mixture, data.weights) keeps that contract with sources of weights w_k (summing
// to 1): sample i goes to a source by a chain of Beatty splits, and within its source it is that
// source's m-th sample, read as above from the source's own windows (MixtureSampler).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "data/dataset.h"

namespace ladder::data {

// A bijection of [0, n) keyed by `key`: a balanced Feistel network over the smallest even-bit
// power-of-two domain >= n, with cycle walking back into [0, n) (Black and Rogaway 2002, "Ciphers
// with arbitrary finite domains").
uint64_t feistel_permute(uint64_t index, uint64_t n, uint64_t key);

class WindowSampler {
 public:
  WindowSampler(uint64_t dataset_tokens, int64_t seq_len, int64_t global_batch, uint64_t seed);
  uint64_t windows_per_epoch() const { return windows_; }
  // First token of the window at (step, row); the window is seq_len + 1 tokens long.
  uint64_t window_start(int64_t step, int64_t row) const;
  int64_t seq_len() const { return seq_len_; }
  int64_t global_batch() const { return global_batch_; }

 private:
  uint64_t windows_;
  int64_t seq_len_;
  int64_t global_batch_;
  uint64_t seed_;
};

// Which source sample i = step * global_batch + row comes from, and which of that source's
// samples it is. Source k (weight w_k, the rest after it weighing R_k = w_k + ... + w_K) takes,
// of the samples that reach it, those where
//     floor((j + 1) p + 1/2) > floor(j p + 1/2),   p = w_k / R_k,
// j counting the samples that reach it; the others go on to source k + 1. Its own count after j
// samples is floor(j p + 1/2) exactly (the sum telescopes), so among any first n samples source k
// holds n w_k to within one per source before it, every step of a run mixes the sources as the
// weights say, and no random draw or state is involved: the result depends only on (i, weights).
// Within source k, sample m is its window permute_{seed, k, epoch}(m mod W_k) of epoch m / W_k.
class MixtureSampler {
 public:
  // `tokens[k]`: source k's training tokens; `weights`: >= 0, not all 0 (normalised here);
  // `names` for errors and the permutations' keys.
  MixtureSampler(const std::vector<uint64_t>& tokens, std::vector<double> weights,
                 std::vector<std::string> names, int64_t seq_len, int64_t global_batch,
                 uint64_t seed);
  struct Window {
    size_t source;
    uint64_t start;  // first token in the source; the window is seq_len + 1 tokens
  };
  Window window(int64_t step, int64_t row) const;
  // The source and its own sample index of global sample i (the Beatty chain above).
  std::pair<size_t, uint64_t> assign(uint64_t i) const;
  const std::vector<double>& weights() const { return weights_; }

 private:
  std::vector<double> weights_;    // normalised
  std::vector<double> take_;       // p of each source in the chain
  std::vector<uint64_t> windows_;  // per source
  std::vector<uint64_t> keys_;     // per source
  int64_t seq_len_;
  int64_t global_batch_;
  uint64_t seed_;
};

// One source of a mixture: its training split and weight.
struct MixtureSource {
  std::string name;
  std::shared_ptr<const TokenDataset> dataset;
  double weight = 0;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len, int64_t global_batch,
             uint64_t seed);
  // A mixture of sources (MixtureSampler); they must share one tokenizer.
  DataLoader(std::vector<MixtureSource> sources, int64_t seq_len, int64_t global_batch,
             uint64_t seed);
  // Rows [first_row, first_row + count) of the global batch at `step`, as int64 [count, seq_len +
  // 1]: inputs are [:, :-1], targets [:, 1:].
  torch::Tensor rows(int64_t step, int64_t first_row, int64_t count) const;
  // The same rows written into `out` (int64 [count, seq_len + 1], contiguous, on the CPU: pinned
  // memory that a copy to the GPU reads without the host waiting).
  void rows_into(int64_t step, int64_t first_row, const torch::Tensor& out) const;

 private:
  std::vector<std::shared_ptr<const TokenDataset>> datasets_;  // one, or the mixture's sources
  int64_t seq_len_, global_batch_;
  std::unique_ptr<WindowSampler> sampler_;   // one dataset
  std::unique_ptr<MixtureSampler> mixture_;  // a mixture
};

}  // namespace ladder::data

namespace ladder::data {

// Evaluation reads the validation split in order: window i is tokens [i * seq_len, i * seq_len +
// seq_len + 1). The number of whole windows the split holds:
int64_t sequential_window_count(const TokenDataset& dataset, int64_t seq_len);
// Windows [first, first + count) as int64 [count, seq_len + 1].
torch::Tensor sequential_windows(const TokenDataset& dataset, int64_t seq_len, int64_t first,
                                 int64_t count);
// Bytes of text per predicted token over the first `windows` such windows (their targets, tokens
// 1 .. windows * seq_len, decoded with the dataset's tokenizer; the end-of-document token is none):
// a loss in nats per token divided by it is nats per byte, comparable across tokenizers.
double bytes_per_token(const TokenDataset& dataset, const Tokenizer& tokenizer, int64_t seq_len,
                       int64_t windows);

}  // namespace ladder::data
