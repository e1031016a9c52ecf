// The softmax cross-entropy of one chunk of logits, forward and backward, a row at a time. The
// formulas are in kernels/cross_entropy.h.
#include <limits>

#include "kernels/cpu/loops.h"
#include "kernels/vec.h"

namespace ladder::kernels::cpu::LADDER_ISA {

namespace {

int64_t row_grain(int64_t vocab) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(vocab, 1));
}

// max_j z_j over one row of scaled logits (whole vectors, then the tail one by one).
template <typename T>
acc_t<T> row_max(const T* z, int64_t vocab, acc_t<T> scale) {
  using A = acc_t<T>;
  const int64_t whole = vocab - vocab % kWidth<T>;
  const Vec<T> k(scale);
  Vec<T> m(-std::numeric_limits<A>::infinity());
  for (int64_t j = 0; j < whole; j += kWidth<T>)
    m = at::vec::maximum(m, load_vec(z + j) * k);
  A best = at::vec::vec_reduce_all<A>([](auto a, auto b) { return at::vec::maximum(a, b); }, m);
  for (int64_t j = whole; j < vocab; ++j)
    best = std::max(best, static_cast<A>(z[j]) * scale);
  return best;
}

}  // namespace

template <typename T>
void cross_entropy_forward(const T* logits, const int64_t* targets, int64_t rows, int64_t vocab,
                           double scale, acc_t<T>* loss, acc_t<T>* lse) {
  using A = acc_t<T>;
  at::parallel_for(0, rows, row_grain(vocab), [&](int64_t begin, int64_t end) {
    const Vec<T> k(static_cast<A>(scale));
    for (int64_t r = begin; r < end; ++r) {
      const T* z = logits + r * vocab;
      const A m = row_max(z, vocab, static_cast<A>(scale));
      const Vec<T> vm(m);
      Vec<T> total(0);
      for_each_vector<T>(vocab, [&](int64_t j, int64_t w) {
        const Vec<T> e = at::vec::fmsub(load_vec(z + j, w), k, vm).exp();
        // A short tail's zero-filled lanes would add exp(-m): keep only the row's own lanes.
        total = total + (w == kWidth<T> ? e : Vec<T>::set(Vec<T>(0), e, w));
      });
      lse[r] = m + std::log(lane_sum(total));
      loss[r] = lse[r] - static_cast<A>(z[targets[r]]) * static_cast<A>(scale);
    }
  });
}

template <typename T>
void cross_entropy_backward(T* logits, const int64_t* targets, const acc_t<T>* lse,
                            const acc_t<T>* grad_loss, const acc_t<T>* grad_lse, int64_t rows,
                            int64_t vocab, double scale) {
  using A = acc_t<T>;
  at::parallel_for(0, rows, row_grain(vocab), [&](int64_t begin, int64_t end) {
    const Vec<T> k(static_cast<A>(scale));
    for (int64_t r = begin; r < end; ++r) {
      T* z = logits + r * vocab;
      const A g_loss = grad_loss ? grad_loss[r] : A(0), g_lse = grad_lse ? grad_lse[r] : A(0);
      const Vec<T> l(lse[r]), weight(static_cast<A>(scale) * (g_loss + g_lse));
      for_each_vector<T>(vocab, [&](int64_t j, int64_t w) {
        store_vec(z + j, at::vec::fmsub(load_vec(z + j, w), k, l).exp() * weight, w);
      });
      // The target's one-hot term (for bf16 logits its softmax term is rounded once before).
      const int64_t t = targets[r];
      z[t] = static_cast<T>(static_cast<A>(z[t]) - static_cast<A>(scale) * g_loss);
    }
  });
}

#define LADDER_CROSS_ENTROPY(T)                                                                 \
  template void cross_entropy_forward<T>(const T*, const int64_t*, int64_t, int64_t, double,    \
                                         acc_t<T>*, acc_t<T>*);                                 \
  template void cross_entropy_backward<T>(T*, const int64_t*, const acc_t<T>*, const acc_t<T>*, \
                                          const acc_t<T>*, int64_t, int64_t, double);
LADDER_CROSS_ENTROPY(float)
LADDER_CROSS_ENTROPY(c10::BFloat16)
LADDER_CROSS_ENTROPY(double)
#undef LADDER_CROSS_ENTROPY

}  // namespace ladder::kernels::cpu::LADDER_ISA
