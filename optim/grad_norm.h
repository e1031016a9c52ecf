// The global gradient norm of a model laid out over tp x pp x dp (x ep), the one clipping uses, in
// one place. Each rank holds three kinds of gradient, as segments of its ParamStore:
//   split       tensor-parallel blocks, disjoint across tp ranks (summed over tp);
//   replicated  the same on every tp rank (counted once);
//   experts     split over ep, disjoint across ep and tp ranks (summed over tp and ep);
// each pipeline stage adds its own, and the last stage's copy of a tied embedding is not counted
// again. Under ZeRO-1 a rank holds the reduced gradient of its shard only, so its parts are first
// summed over the ranks that share the shard's optimizer. Every group reduces all the parts it sums
// in one collective (fp64, on the gradients' device): at most dp, expert_dp, tp, ep and pp once
// each per step.
#pragma once

#include <vector>

#include "models/params.h"
#include "optim/adamw.h"
#include "parallel/communicator.h"
#include "parallel/data_parallel.h"

namespace ladder::optim {

// The groups that sum parts of the norm; null (or size 1) where there is nothing to sum.
struct GradNormGroups {
  const parallel::DataParallel* sharded_dense = nullptr;    // ZeRO-1 over dp: split + replicated
  const parallel::DataParallel* sharded_experts = nullptr;  // ZeRO-1 over expert_dp: experts
  const parallel::Communicator* tp = nullptr;
  const parallel::Communicator* ep = nullptr;  // expert parallelism active
  const parallel::Communicator* pp = nullptr;
};

class GlobalGradNorm {
 public:
  // `segments`: what this rank's optimizer updates (AdamW::segments()).
  GlobalGradNorm(const models::ParamStore& params, const std::vector<ParamSegment>& segments,
                 GradNormGroups groups);
  // sqrt of the sum of squares of every gradient of the whole model, the same on every rank of
  // the island: a 0-d fp64 tensor on the gradients' device, reduced there (nothing waits for the
  // device: the sync-free step reads it only when it logs).
  torch::Tensor compute_on_device(const models::ParamStore& params) const;
  // The same number on the host (one synchronisation).
  double compute(const models::ParamStore& params) const;

 private:
  std::vector<ParamSegment> split_, replicated_, experts_;
  GradNormGroups groups_;
};

}  // namespace ladder::optim
