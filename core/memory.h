// Memory that LibTorch has allocated on a device, and its peak since the last reset: what the
// trainer reports as activation memory (the peak of a step above its starting level).
//
// On CUDA these are the caching allocator's own statistics (bytes in live tensors). On the CPU,
// LibTorch keeps no such count, so the first call installs a counting wrapper around its CPU
// allocator (c10::SetCPUAllocator); tensors allocated before that are not counted, and their
// release does not disturb the count.
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace ladder {

int64_t allocated_bytes(const torch::Device& device);
int64_t peak_allocated_bytes(const torch::Device& device);
// Starts a new peak at the current level.
void reset_peak_allocated_bytes(const torch::Device& device);

// Keeps CPU memory the process frees for reuse instead of handing it back to the system: glibc then
// serves blocks up to 32 MiB from its heap (not fresh mappings) and trims the heap only above 2 GiB
// of free space. A training step allocates the same activation sizes every micro-batch; pages given
// back fault in again at their next first touch, which cost 3-8% of a bf16 step on the 2-core VM
// (bench/README.md). Does nothing where the user set MALLOC_MMAP_THRESHOLD_ or
// MALLOC_TRIM_THRESHOLD_ (glibc's own variables), or off glibc.
void keep_freed_cpu_memory();

}  // namespace ladder
