// The gradient reduction of every parameter a rank holds (one DataParallel per group of ranks that
// share a gradient): over dp, except the experts split over ep, which are reduced over the dp / ep
// ranks that hold the same experts (the mesh's expert_dp; parallel/expert_parallel.h). Without
// expert parallelism, one DataParallel over dp for everything. What the optimizer updates (owned),
// what a checkpoint writes (shard) and the communication counters are the union of the groups'.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/data_parallel.h"
#include "parallel/mesh.h"

namespace ladder::parallel {

class GradientReduction {
 public:
  // `split_experts[k]`: values[k] is an expert split over ep. options.late_tensors index `values`.
  GradientReduction(const std::vector<torch::Tensor>& values,
                    const std::vector<bool>& split_experts, const ProcessMesh& mesh,
                    const DataParallelOptions& options);

  DataParallel& dense() { return *dense_; }
  const DataParallel& dense() const { return *dense_; }
  DataParallel* experts() { return experts_.get(); }
  const DataParallel* experts() const { return experts_.get(); }

  void zero_grad();
  void before_backward(bool last);
  void finish_grad_sync();
  void gather_params();
  // What this rank's optimizer updates, and what it writes to checkpoints: ranges of `values`
  // (FlatRange::tensor indexes the constructor's list), in order.
  std::vector<FlatRange> owned() const;
  std::vector<FlatRange> shard() const;
  CommStats take_stats();
  int64_t bucket_count() const;

  // The start-up log line: dp size, micro-batches, buckets, overlap, ZeRO-1.
  std::string describe(int64_t microbatches, int64_t micro_batch, double bucket_mb,
                       bool overlap) const;

 private:
  template <class F>
  void each(F f) {
    f(*dense_);
    if (experts_) f(*experts_);
  }
  std::vector<FlatRange> segments(const std::vector<FlatRange>& (DataParallel::*ranges)()
                                      const) const;

  std::vector<size_t> dense_index_, expert_index_;  // positions in the ParamStore's list
  std::unique_ptr<DataParallel> dense_, experts_;
  int dp_size_ = 1;
};

}  // namespace ladder::parallel
