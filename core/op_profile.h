// Where a training step's time goes, by operator class: matrix products, attention, norms, rotary
// embeddings, activations, the loss, the optimizer, casts, ... (bench/README.md,
// `bench_train_step --profile`; docs/performance.md).
//
// It listens to LibTorch's RecordFunction (the hook its own profiler uses) and charges each
// operator's self time (its duration minus that of the operators it called) to one class:
//   - by the operator's name first: the matrix products (mm, bmm, addmm, ...) are "matmul", the
//     fused attention kernels "attention", dtype conversions "cast";
//   - otherwise by the innermost LADDER_OP_CLASS scope around it in the forward pass: the blocks
//     mark their norms, rotary embeddings, activations, loss, ...;
//   - a backward node takes the class of the forward operator that created it (autograd's sequence
//     numbers tie the two), so the backward of a composite norm counts as "norm";
//   - what is left is "other" (residual adds, reshapes, the embedding), and the autograd engine's
//     own work (gradient accumulation) is "autograd".
// Without a running OpProfile the scopes cost a branch: RecordFunction is inactive when no callback
// is registered.
#pragma once

#include <ATen/record_function.h>

#include <map>
#include <string>

// Charges the rest of the enclosing C++ scope to operator class `name` (a string literal).
#define LADDER_OP_CLASS(name) RECORD_USER_SCOPE("ladder::" name)

namespace ladder {

class OpProfile {
 public:
  OpProfile();  // starts listening, on every thread
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  // Self seconds per class since construction or the last reset().
  std::map<std::string, double> seconds() const;
  // Self seconds per operator or scope name ("aten::mul", "MulBackward0", "ladder::norm", ...).
  std::map<std::string, double> seconds_by_name() const;
  void reset();

 private:
  at::CallbackHandle handle_;
};

}  // namespace ladder
