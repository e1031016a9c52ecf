// The NCCL backend of the Communicator for CUDA tensors: the wheel's NCCL, the same libnccl.so.2
// that LibTorch loads. The communicator of a group is created on its first CUDA collective
// (collective over the group): rank 0 makes the NCCL unique id and MPI broadcasts it.
//
// Every operation runs on the communicator's own CUDA stream, ordered after the work already queued
// on the caller's current stream (an event, waited for on the device), so that gradient reductions
// overlap with the backward pass still being queued on the compute stream. The NcclWork returned
// completes it: test() asks without blocking, wait() blocks the host against the group's timeout; a
// stall aborts the NCCL communicator and the job with the operation and group named.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace ladder::parallel {

enum class ReduceOp;
struct P2POp;

class NcclWork {
 public:
  struct Impl;
  explicit NcclWork(std::unique_ptr<Impl> impl);
  ~NcclWork();
  bool test();  // true once complete on the device
  void wait();  // the host waits for completion, under the timeout

 private:
  std::unique_ptr<Impl> impl_;
};

class NcclComm {
 public:
  NcclComm(MPI_Comm group, int rank, int size, std::string name, std::vector<int> world_ranks,
           double timeout_s);
  ~NcclComm();
  std::unique_ptr<NcclWork> all_reduce(torch::Tensor tensor, ReduceOp op);
  // `out` holds size() blocks shaped like `in`, in rank order; `in` may be a block of `out`.
  std::unique_ptr<NcclWork> all_gather(torch::Tensor in, torch::Tensor out);
  std::unique_ptr<NcclWork> reduce_scatter(torch::Tensor in, torch::Tensor out, ReduceOp op);
  std::unique_ptr<NcclWork> broadcast(torch::Tensor tensor, int root);
  std::unique_ptr<NcclWork> batch_isend_irecv(std::vector<P2POp>& ops);
  std::unique_ptr<NcclWork> all_to_all(torch::Tensor in, torch::Tensor out,
                                       const std::vector<int64_t>& send_counts,
                                       const std::vector<int64_t>& recv_counts);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace ladder::parallel
