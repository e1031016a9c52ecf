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

}  // namespace ladder
