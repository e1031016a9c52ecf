// Whether this CPU runs the fused kernels' vectorised loops (kernels/cpu/, compiled for AVX2 and
// FMA). Where it does not, every kernel falls back to its LibTorch composite.
#pragma once

namespace ladder::kernels {

bool cpu_has_avx2();

}  // namespace ladder::kernels
