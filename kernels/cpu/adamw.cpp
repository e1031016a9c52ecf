// AdamW's update in one pass over a flat fp32 parameter, its gradient and its moments, and, when
// asked, the bf16 copy of the updated parameter. The formulas are in kernels/adamw.h.
#include "kernels/cpu/loops.h"
#include "kernels/vec.h"

namespace ladder::kernels::cpu::LADDER_ISA {

void adamw(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t size,
           const AdamWScalars& s, c10::BFloat16* param_bf16) {
  at::parallel_for(0, size, 32768, [&](int64_t begin, int64_t end) {
    const Vec<float> b1(s.beta1), one_minus_b1(1 - s.beta1), b2(s.beta2), one_minus_b2(1 - s.beta2),
        step(s.step_size), decay(s.decay), bias2_sqrt(s.bias2_sqrt), eps(s.eps);
    for_each_vector<float>(end - begin, [&](int64_t i, int64_t w) {
      const int64_t k = begin + i;
      const Vec<float> g = load_vec(grad + k, w);
      const Vec<float> m = at::vec::fmadd(load_vec(exp_avg + k, w), b1, g * one_minus_b1);
      const Vec<float> v = at::vec::fmadd(load_vec(exp_avg_sq + k, w), b2, g * g * one_minus_b2);
      const Vec<float> denominator = v.sqrt() / bias2_sqrt + eps;
      const Vec<float> p = load_vec(param + k, w) * decay - step * m / denominator;
      store_vec(exp_avg + k, m, w);
      store_vec(exp_avg_sq + k, v, w);
      store_vec(param + k, p, w);
      if (param_bf16) store_vec(param_bf16 + k, p, w);
    });
  });
}

}  // namespace ladder::kernels::cpu::LADDER_ISA
