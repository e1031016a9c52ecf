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
#pragma once

#include <cstdint>
#include <memory>

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

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len, int64_t global_batch,
             uint64_t seed);
  // Rows [first_row, first_row + count) of the global batch at `step`, as int64 [count, seq_len +
  // 1]: inputs are [:, :-1], targets [:, 1:].
  torch::Tensor rows(int64_t step, int64_t first_row, int64_t count) const;
  const WindowSampler& sampler() const { return sampler_; }

 private:
  std::shared_ptr<const TokenDataset> dataset_;
  WindowSampler sampler_;
};

}  // namespace ladder::data

namespace ladder::data {

// Evaluation reads the validation split in order: window i is tokens [i * seq_len, i * seq_len +
// seq_len + 1). The number of whole windows the split holds:
int64_t sequential_window_count(const TokenDataset& dataset, int64_t seq_len);
// Windows [first, first + count) as int64 [count, seq_len + 1].
torch::Tensor sequential_windows(const TokenDataset& dataset, int64_t seq_len, int64_t first,
                                 int64_t count);

}  // namespace ladder::data
