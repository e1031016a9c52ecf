// The vectorised CPU loops behind the fused kernels (kernels/*.h), on raw contiguous storage. Each
// loop file of kernels/cpu/ is compiled twice (kernels/CMakeLists.txt), as ATen compiles its own
// kernels once per CPU capability: for AVX2 + FMA into namespace cpu::avx2 (8 fp32 lanes) and for
// AVX-512 into cpu::avx512 (16 lanes); LADDER_CPU_LOOP picks the widest this CPU runs. Everything
// else about a kernel (shapes, dtypes, autograd) lives in its kernels/<name>.cpp, compiled for the
// baseline ISA like the rest of ladder, which calls a loop only where kernels::cpu_has_avx2().
//
// Element types: T is the storage type of activations (float, c10::BFloat16 or double) and A =
// acc_t<T> its arithmetic type (float, float, double); gains, tables and statistics are in A.
#pragma once

#include <c10/util/BFloat16.h>

#include "kernels/cpu.h"

#include <cstdint>
#include <type_traits>

namespace ladder::kernels::cpu {

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// --- AdamW (kernels/adamw.h): its scalars, shared by both instruction sets.
struct AdamWScalars {
  float beta1, beta2;
  float step_size;   // lr / (1 - beta1^t)
  float decay;       // 1 - lr x weight_decay
  float bias2_sqrt;  // sqrt(1 - beta2^t)
  float eps;
};

namespace avx2 {
#include "kernels/cpu/loops.inc"
}  // namespace avx2
namespace avx512 {
#include "kernels/cpu/loops.inc"
}  // namespace avx512

}  // namespace ladder::kernels::cpu

// The loop `name` (with its template arguments) compiled for this CPU's widest vectors.
#define LADDER_CPU_LOOP(...)                                                         \
  (::ladder::kernels::cpu_has_avx512() ? ::ladder::kernels::cpu::avx512::__VA_ARGS__ \
                                       : ::ladder::kernels::cpu::avx2::__VA_ARGS__)
