// Data parallelism over the mesh's dp axis: every dp rank holds the whole model, runs its share of
// the step's micro-batches, and the gradients are summed across ranks before the optimizer step.
//
// Gradients live in one flat buffer, cut into buckets of about `bucket_bytes` (Li et al. 2020,
// "PyTorch Distributed: Experiences on Accelerating Data Parallel Training"): one collective per
// bucket instead of one per parameter, and each parameter's .grad() is a view into its bucket, so
// the backward pass accumulates straight into what is sent. Buckets are filled in reverse
// registration order, the order in which the backward pass produces gradients, so with `overlap`
// a bucket's reduction starts while the backward pass is still computing the earlier layers.
//
// With `shard_optimizer` (ZeRO stage 1, Rajbhandari et al. 2020) each bucket is reduce-scattered
// instead of all-reduced: rank r receives the summed gradient of the r-th 1/dp of every bucket, the
// optimizer updates only that shard (its moments exist only there), and an all-gather of the
// updated parameters makes every rank whole again. The traffic is the same as an all-reduce's; the
// optimizer state per rank drops by dp.
//
// Parameters are moved into a flat buffer too (their tensors become views of it, so models keep
// their handles): the all-gather then writes them in place. At dp = 1 nothing is communicated and
// the buffers cost nothing but a zeroing of the gradients per step.
//
// Everything here is layout bookkeeping over a list of tensors: this file knows nothing about
// models or optimizers (DESIGN.md dependency direction).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace ladder::parallel {

// A contiguous piece of one tensor of the list: elements [offset, offset + length) of its
// row-major flattening.
struct FlatRange {
  size_t tensor = 0;
  int64_t offset = 0;
  int64_t length = 0;
  bool operator==(const FlatRange& o) const {
    return tensor == o.tensor && offset == o.offset && length == o.length;
  }
};

struct DataParallelOptions {
  int64_t bucket_bytes = 25 << 20;
  bool overlap = true;           // reduce buckets during the backward pass of the last micro-batch
  bool shard_optimizer = false;  // ZeRO-1
  // Tensors whose gradients the caller still changes between the backward pass and
  // finish_grad_sync (a tied embedding summed across pipeline stages): their buckets, and those
  // after them, start only there.
  std::vector<size_t> late_tensors;
};

class DataParallel {
 public:
  // `params`: fp32 leaf tensors, the same shapes in the same order on every dp rank (checked).
  DataParallel(const std::vector<torch::Tensor>& params, const Communicator& dp,
               const DataParallelOptions& options);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Zeroes every gradient (they stay views of the bucket buffer).
  void zero_grad();
  // Before each micro-batch's backward: `last` marks the step's last micro-batch, during whose
  // backward full buckets start reducing (with overlap).
  void before_backward(bool last);
  // Completes the reduction. Afterwards every gradient this rank owns (all of them, or its ZeRO
  // shard) is the sum over the dp ranks.
  void finish_grad_sync();
  // ZeRO-1: gathers every rank's updated shard, so all ranks hold the whole model again.
  void gather_params();

  // What this rank's optimizer updates: whole tensors, or its ZeRO shard. Ranges are sorted by
  // tensor and offset.
  const std::vector<FlatRange>& owned() const;
  // This rank's share of a partition of all parameters across dp ranks (its ZeRO shard, whether
  // or not ZeRO is on): what it writes to checkpoints.
  const std::vector<FlatRange>& shard() const;
  bool sharded_optimizer() const;  // ZeRO-1 asked for and dp > 1

  // fp64 values summed over the dp ranks in one collective on their device, counted.
  void sum(torch::Tensor& values) const;

  // Communication since the last call.
  CommStats take_stats();

  int64_t bucket_count() const;

  struct State;  // the buckets and buffers, shared with the gradient hooks (data_parallel.cpp)

 private:
  std::shared_ptr<State> state_;
};

}  // namespace ladder::parallel
