// RMSNorm with the residual add, forward and backward, one row at a time (rows in parallel).
// The formulas are in kernels/rms_norm.h.
#include <algorithm>
#include <vector>

#include "kernels/cpu/loops.h"
#include "kernels/vec.h"

namespace ladder::kernels::cpu::LADDER_ISA {

namespace {

// Rows per parallel task: enough elements that a task outweighs its scheduling.
int64_t row_grain(int64_t n) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1));
}

// Rows per block of the gain gradient's partial sums: at least the grain, and at most
// kMaxGainBlocks blocks, so the partial rows stay small (kMaxGainBlocks x n) for long inputs.
constexpr int64_t kMaxGainBlocks = 256;
int64_t gain_block_rows(int64_t rows, int64_t n) {
  return std::max(row_grain(n), (rows + kMaxGainBlocks - 1) / kMaxGainBlocks);
}

}  // namespace

template <typename T, typename B, typename O>
void add_rms_norm_forward(const T* residual, const B* branch, double scale, const acc_t<T>* gain,
                          int64_t rows, int64_t n, double eps, T* sum, O* normed,
                          acc_t<T>* inv_rms) {
  using A = acc_t<T>;
  at::parallel_for(0, rows, row_grain(n), [&](int64_t begin, int64_t end) {
    const Vec<T> k(static_cast<A>(scale));
    for (int64_t r = begin; r < end; ++r) {
      const T* x = residual + r * n;
      // The sum is written (when there is a branch) and read back from the row just written: for
      // rows of a few thousand elements it stays in L1/L2 between the two passes.
      const T* s = branch ? sum + r * n : x;
      Vec<T> squares(0);
      for_each_vector<T>(n, [&](int64_t i, int64_t w) {
        Vec<T> v = load_vec(x + i, w);
        if (branch) {
          v = at::vec::fmadd(k, load_vec(branch + r * n + i, w), v);
          store_vec(sum + r * n + i, v, w);
          if constexpr (std::is_same_v<T, c10::BFloat16>) v = load_vec(sum + r * n + i, w);
        }
        squares = at::vec::fmadd(v, v, squares);
      });
      const A inv = static_cast<A>(
          1.0 / std::sqrt(static_cast<double>(lane_sum(squares)) / static_cast<double>(n) + eps));
      inv_rms[r] = inv;
      const Vec<T> vinv(inv);
      for_each_vector<T>(n, [&](int64_t i, int64_t w) {
        store_vec(normed + r * n + i, load_vec(s + i, w) * vinv * load_vec(gain + i, w), w);
      });
    }
  });
}

template <typename T, typename B>
void add_rms_norm_backward(const T* sum, const acc_t<T>* inv_rms, const acc_t<T>* gain,
                           const acc_t<T>* grad_normed, const T* grad_sum, double scale,
                           int64_t rows, int64_t n, T* grad_residual, B* grad_branch,
                           acc_t<T>* grad_gain) {
  using A = acc_t<T>;
  // d gain_j = sum over rows of dy_j s_j inv. The rows are cut into fixed blocks, each summing its
  // own partial row, and the partial rows are added in block order at the end. The blocks depend
  // only on (rows, n), never on how at::parallel_for splits the range among threads (its chunks
  // can be shorter than the grain asked for), so no two tasks share a partial row and the result
  // is the same, bitwise, at any thread count.
  const int64_t block = gain_block_rows(rows, n);
  const int64_t blocks = (rows + block - 1) / block;
  std::vector<A> partial(static_cast<size_t>(blocks * n), A(0));
  at::parallel_for(0, blocks, 1, [&](int64_t first_block, int64_t last_block) {
    const Vec<T> k(static_cast<A>(scale));
    for (int64_t b = first_block; b < last_block; ++b) {
      A* gain_part = partial.data() + b * n;
      for (int64_t r = b * block; r < std::min(rows, (b + 1) * block); ++r) {
        const T* s = sum + r * n;
        const A* dy = grad_normed + r * n;
        const A inv = inv_rms[r];
        const Vec<T> vinv(inv);
        // dot = sum_j dy_j g_j s_j; d s_j = inv (dy_j g_j) - inv^3 s_j dot / n
        Vec<T> dot(0);
        for_each_vector<T>(n, [&](int64_t i, int64_t w) {
          const Vec<T> sv = load_vec(s + i, w), dyv = load_vec(dy + i, w);
          dot = at::vec::fmadd(dyv * load_vec(gain + i, w), sv, dot);
          store_vec(gain_part + i, at::vec::fmadd(dyv, sv * vinv, load_vec(gain_part + i, w)), w);
        });
        const Vec<T> c(static_cast<A>(-static_cast<double>(lane_sum(dot)) * inv * inv * inv /
                                      static_cast<double>(n)));
        for_each_vector<T>(n, [&](int64_t i, int64_t w) {
          Vec<T> ds = at::vec::fmadd(c, load_vec(s + i, w),
                                     vinv * load_vec(dy + i, w) * load_vec(gain + i, w));
          if (grad_sum) ds = ds + load_vec(grad_sum + r * n + i, w);
          store_vec(grad_residual + r * n + i, ds, w);
          if (grad_branch) store_vec(grad_branch + r * n + i, ds * k, w);
        });
      }
    }
  });
  for (int64_t j = 0; j < n; ++j) {
    A total = 0;
    for (int64_t b = 0; b < blocks; ++b)
      total += partial[static_cast<size_t>(b * n + j)];
    grad_gain[j] = total;
  }
}

#define LADDER_RMS_NORM_FORWARD(T, B, O)                                                   \
  template void add_rms_norm_forward<T, B, O>(const T*, const B*, double, const acc_t<T>*, \
                                              int64_t, int64_t, double, T*, O*, acc_t<T>*);
#define LADDER_RMS_NORM(T, B)                                                                    \
  LADDER_RMS_NORM_FORWARD(T, B, acc_t<T>)                                                        \
  template void add_rms_norm_backward<T, B>(const T*, const acc_t<T>*, const acc_t<T>*,          \
                                            const acc_t<T>*, const T*, double, int64_t, int64_t, \
                                            T*, B*, acc_t<T>*);
LADDER_RMS_NORM(float, float)
LADDER_RMS_NORM(float, c10::BFloat16)
LADDER_RMS_NORM(double, double)
LADDER_RMS_NORM(c10::BFloat16, c10::BFloat16)
// An fp32 residual stream whose norm feeds bf16 products (autocast).
LADDER_RMS_NORM_FORWARD(float, float, c10::BFloat16)
LADDER_RMS_NORM_FORWARD(float, c10::BFloat16, c10::BFloat16)
#undef LADDER_RMS_NORM_FORWARD
#undef LADDER_RMS_NORM

}  // namespace ladder::kernels::cpu::LADDER_ISA
