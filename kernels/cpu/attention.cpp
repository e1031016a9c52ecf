// The causal softmax of attention scores and its backward, one query row at a time (rows in
// parallel). The formulas are in kernels/attention.h.
#include <limits>

#include "kernels/cpu/loops.h"
#include "kernels/vec.h"

namespace ladder::kernels::cpu::LADDER_ISA {

namespace {

int64_t row_grain(int64_t seq) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(seq, 1));
}

}  // namespace

template <typename T>
void causal_softmax_forward(const T* scores, int64_t rows, int64_t seq, double scale, T* probs) {
  using A = acc_t<T>;
  at::parallel_for(0, rows, row_grain(seq), [&](int64_t begin, int64_t end) {
    const Vec<T> k(static_cast<A>(scale));
    for (int64_t r = begin; r < end; ++r) {
      const T* s = scores + r * seq;
      T* p = probs + r * seq;
      const int64_t n = r % seq + 1;  // the keys this query sees
      // The row's maximum: whole vectors, then the tail one by one.
      const int64_t whole = n - n % kWidth<T>;
      Vec<T> mv(-std::numeric_limits<A>::infinity());
      for (int64_t j = 0; j < whole; j += kWidth<T>)
        mv = at::vec::maximum(mv, load_vec(s + j));
      A m = at::vec::vec_reduce_all<A>([](auto a, auto b) { return at::vec::maximum(a, b); }, mv);
      for (int64_t j = whole; j < n; ++j)
        m = std::max(m, static_cast<A>(s[j]));
      m *= static_cast<A>(scale);
      const Vec<T> vm(m);
      Vec<T> total(0);
      // exp(scale s - m), summed (and kept in the output unless it is bf16); then normalised in a
      // second pass. Each pass reads an element before writing it, so probs may be scores.
      for_each_vector<T>(n, [&](int64_t j, int64_t w) {
        Vec<T> e = at::vec::fmsub(load_vec(s + j, w), k, vm).exp();
        if (w < kWidth<T>) e = Vec<T>::set(Vec<T>(0), e, w);
        total = total + e;
        if constexpr (!std::is_same_v<T, c10::BFloat16>) store_vec(p + j, e, w);
      });
      const Vec<T> inv(static_cast<A>(1) / lane_sum(total));
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        // Normalised from the unrounded exponentials, recomputed (the scores are still there).
        for_each_vector<T>(n, [&](int64_t j, int64_t w) {
          store_vec(p + j, at::vec::fmsub(load_vec(s + j, w), k, vm).exp() * inv, w);
        });
      } else {
        for_each_vector<T>(
            n, [&](int64_t j, int64_t w) { store_vec(p + j, load_vec(p + j, w) * inv, w); });
      }
      std::fill(p + n, p + seq, T(0));
    }
  });
}

template <typename T>
void causal_softmax_backward(const T* probs, T* grad, int64_t rows, int64_t seq, double scale) {
  using A = acc_t<T>;
  at::parallel_for(0, rows, row_grain(seq), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* p = probs + r * seq;
      T* g = grad + r * seq;
      const int64_t n = r % seq + 1;
      Vec<T> dot(0);
      for_each_vector<T>(n, [&](int64_t j, int64_t w) {
        dot = at::vec::fmadd(load_vec(p + j, w), load_vec(g + j, w), dot);
      });
      const Vec<T> d(lane_sum(dot)), k(static_cast<A>(scale));
      for_each_vector<T>(n, [&](int64_t j, int64_t w) {
        store_vec(g + j, k * load_vec(p + j, w) * (load_vec(g + j, w) - d), w);
      });
      std::fill(g + n, g + seq, T(0));
    }
  });
}

#define LADDER_CAUSAL_SOFTMAX(T)                                                   \
  template void causal_softmax_forward<T>(const T*, int64_t, int64_t, double, T*); \
  template void causal_softmax_backward<T>(const T*, T*, int64_t, int64_t, double);
LADDER_CAUSAL_SOFTMAX(float)
LADDER_CAUSAL_SOFTMAX(c10::BFloat16)
LADDER_CAUSAL_SOFTMAX(double)
#undef LADDER_CAUSAL_SOFTMAX

}  // namespace ladder::kernels::cpu::LADDER_ISA
