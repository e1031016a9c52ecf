// SwiGLU's forward and backward, elementwise over the flattened tensors. The formulas are in
// kernels/swiglu.h.
#include "kernels/cpu/loops.h"
#include "kernels/vec.h"

namespace ladder::kernels::cpu::LADDER_ISA {

namespace {

constexpr int64_t kGrain = 16384;

template <typename T>
Vec<T> sigmoid(const Vec<T>& x) {
  const Vec<T> one(1);
  return one / (one + x.neg().exp());
}

}  // namespace

template <typename T>
void swiglu_forward(const T* gate, const T* up, int64_t size, T* out) {
  at::parallel_for(0, size, kGrain, [&](int64_t begin, int64_t end) {
    for_each_vector<T>(end - begin, [&](int64_t i, int64_t w) {
      const Vec<T> g = load_vec(gate + begin + i, w);
      store_vec(out + begin + i, g * sigmoid<T>(g) * load_vec(up + begin + i, w), w);
    });
  });
}

template <typename T>
void swiglu_backward(const T* gate, const T* up, const T* grad_out, int64_t size, T* grad_gate,
                     T* grad_up) {
  at::parallel_for(0, size, kGrain, [&](int64_t begin, int64_t end) {
    const Vec<T> one(1);
    for_each_vector<T>(end - begin, [&](int64_t i, int64_t w) {
      const int64_t k = begin + i;
      const Vec<T> g = load_vec(gate + k, w), u = load_vec(up + k, w),
                   dy = load_vec(grad_out + k, w);
      const Vec<T> s = sigmoid<T>(g);
      // d silu(g) / dg = s (1 + g (1 - s))
      store_vec(grad_gate + k, dy * u * s * at::vec::fmadd(g, one - s, one), w);
      store_vec(grad_up + k, dy * g * s, w);
    });
  });
}

#define LADDER_SWIGLU(T)                                            \
  template void swiglu_forward<T>(const T*, const T*, int64_t, T*); \
  template void swiglu_backward<T>(const T*, const T*, const T*, int64_t, T*, T*);
LADDER_SWIGLU(float)
LADDER_SWIGLU(c10::BFloat16)
LADDER_SWIGLU(double)
#undef LADDER_SWIGLU

}  // namespace ladder::kernels::cpu::LADDER_ISA
