#include "kernels/cpu.h"

#include <cstdlib>
#include <cstring>

namespace ladder::kernels {

namespace {

// LADDER_KERNEL_ISA=avx2 keeps the 8-lane build on an AVX-512 CPU, =none the LibTorch composites on
// any CPU: each dispatch path can be run, and compared, on one machine.
bool kernel_isa_is(const char* name) {
  const char* isa = std::getenv("LADDER_KERNEL_ISA");
  return isa && std::strcmp(isa, name) == 0;
}

}  // namespace

// Compiled for the baseline ISA (this file is not in kernels/cpu/), so it runs anywhere.
bool cpu_has_avx2() {
  static const bool has = !kernel_isa_is("none") && __builtin_cpu_supports("avx2") &&
                          __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return has;
}

bool cpu_has_avx512() {
  static const bool has = [] {
    if (kernel_isa_is("avx2")) return false;
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
  }();
  return has;
}

}  // namespace ladder::kernels
