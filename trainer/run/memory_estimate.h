// What a rank of a run needs in memory, estimated from the recipe before any work: parameters,
// gradients, AdamW's moments (and its bf16 weight copies), the activations one micro-batch keeps
// for its backward pass, and how many micro-batches the pipeline schedule keeps in flight. `ladder
// train --check` prints it beside the machine's memory, `ladder train` refuses a run that cannot
// fit, `ladder sweep --dry-run` shows it per run.
//
// Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
// Transformer Models", section 4.1): s b h (34 + 5 a s / h) bytes per layer for 16-bit activations
// without recomputation, twice that in fp32, over tp; plus the readout's logits and their gradient
// (s b V, fp32, over tp). It is an estimate of the busiest rank (the first pipeline stage keeps the
// most micro-batches in flight), stated as such; LibTorch's own workspace comes on top.
#pragma once

#include <cstdint>
#include <string>

#include "parallel/world.h"
#include "trainer/recipe/recipe.h"

namespace ladder {

struct MemoryEstimate {
  double params = 0, grads = 0, optimizer = 0, weight_copies = 0;  // bytes on the busiest rank
  double activations_per_microbatch = 0;
  int64_t microbatches_in_flight = 1;
  double total() const {
    return params + grads + optimizer + weight_copies +
           activations_per_microbatch * static_cast<double>(microbatches_in_flight);
  }
};

// For a resolved recipe (precision and device known) and the dataset's vocabulary.
MemoryEstimate estimate_memory(const Recipe& recipe, int64_t vocab);

// What one rank may use: on the CPU the node's available memory (MemAvailable, or the cgroup's
// limit when lower) over the ranks on the node; on CUDA the GPU's free memory. 0 when unknown.
double memory_per_rank(const Recipe& recipe, const parallel::MpiWorld& world);

// "parameters 12.8 MB + gradients 12.8 MB + AdamW 25.6 MB + activations 2 x 40.1 MB = 131 MB per
// rank (estimate; 11.2 GB available per rank)"
std::string describe_memory(const MemoryEstimate& estimate, double available);

// Throws ladder::Error("train", ...) with the estimate when it exceeds `available` (> 0). Local:
// call it inside check_on_every_rank.
void check_memory_fits(const MemoryEstimate& estimate, double available);

}  // namespace ladder
