#include "kernels/cpu.h"

namespace ladder::kernels {

bool cpu_has_avx2() {
  // Compiled for the baseline ISA (this file is not in kernels/cpu/), so it runs anywhere.
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}

}  // namespace ladder::kernels
