#include "kernels/cpu.h"

#include <cstdlib>
#include <cstring>

namespace ladder::kernels {

// Compiled for the baseline ISA (this file is not in kernels/cpu/), so it runs anywhere.
bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}

bool cpu_has_avx512() {
  // LADDER_KERNEL_ISA=avx2 keeps the 8-lane build on an AVX-512 CPU (to compare the two).
  static const bool has = [] {
    const char* isa = std::getenv("LADDER_KERNEL_ISA");
    if (isa && std::strcmp(isa, "avx2") == 0) return false;
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
  }();
  return has;
}

}  // namespace ladder::kernels
