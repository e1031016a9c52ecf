// The rotary embedding's rotation of q and k, one (batch, position) row of all heads at a time.
// The formulas are in kernels/rotary.h.
#include "kernels/cpu/loops.h"
#include "kernels/vec.h"

namespace ladder::kernels::cpu::LADDER_ISA {

template <typename T>
void rotary(const T* x, const float* cos, const float* sin, int64_t rows, int64_t seq,
            int64_t heads, int64_t head_dim, int direction, T* out) {
  using A = acc_t<T>;
  const int64_t half = head_dim / 2, row_size = heads * head_dim;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(row_size, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* c = cos + (r % seq) * half;
      const float* s = sin + (r % seq) * half;
      for (int64_t h = 0; h < heads; ++h) {
        const T* in = x + r * row_size + h * head_dim;
        T* o = out + r * row_size + h * head_dim;
        for_each_vector<T>(half, [&](int64_t i, int64_t w) {
          Vec<T> cv, sv;
          if constexpr (std::is_same_v<A, float>) {
            cv = load_vec(c + i, w), sv = load_vec(s + i, w);
          } else {  // fp64 activations: the fp32 table widened
            A ct[kWidth<T>] = {}, st[kWidth<T>] = {};
            for (int64_t j = 0; j < w; ++j)
              ct[j] = c[i + j], st[j] = s[i + j];
            cv = Vec<T>::loadu(ct), sv = Vec<T>::loadu(st);
          }
          if (direction < 0) sv = -sv;
          const Vec<T> x1 = load_vec(in + i, w), x2 = load_vec(in + half + i, w);
          store_vec(o + i, at::vec::fmsub(x1, cv, x2 * sv), w);
          store_vec(o + half + i, at::vec::fmadd(x1, sv, x2 * cv), w);
        });
      }
    }
  });
}

template void rotary<float>(const float*, const float*, const float*, int64_t, int64_t, int64_t,
                            int64_t, int, float*);
template void rotary<c10::BFloat16>(const c10::BFloat16*, const float*, const float*, int64_t,
                                    int64_t, int64_t, int64_t, int, c10::BFloat16*);
template void rotary<double>(const double*, const float*, const float*, int64_t, int64_t, int64_t,
                             int64_t, int, double*);

}  // namespace ladder::kernels::cpu::LADDER_ISA
