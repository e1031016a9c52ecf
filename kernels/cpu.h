// Whether this CPU runs the fused kernels' vectorised loops (kernels/cpu/, compiled for AVX2 + FMA
// and for AVX-512). Where it runs neither, every kernel falls back to its LibTorch composite.
// LADDER_KERNEL_ISA=avx2 or =none narrows the choice (tests run every path on one machine).
#pragma once

namespace ladder::kernels {

bool cpu_has_avx2();    // AVX2, FMA and F16C: the kernels run
bool cpu_has_avx512();  // AVX-512 F, BW, VL and DQ as well: their 16-lane build runs

}  // namespace ladder::kernels
