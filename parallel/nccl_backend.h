// The NCCL backend of the Communicator for CUDA tensors, built with -DLADDER_NCCL=ON. The
// communicator of a group is created on its first CUDA collective (collective over the group): rank
// 0 makes the NCCL unique id and MPI broadcasts it. Operations run on CUDA's legacy default stream,
// which orders them with LibTorch's default stream, and are waited for against the group's timeout
// like the MPI ones; a stall aborts the NCCL communicator and the job with the operation and group
// named.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace ladder::parallel {

enum class ReduceOp;
struct P2POp;

class NcclComm {
 public:
  NcclComm(MPI_Comm group, int rank, int size, std::string name, std::vector<int> world_ranks,
           double timeout_s);
  ~NcclComm();
  void all_reduce(torch::Tensor& tensor, ReduceOp op);
  torch::Tensor all_gather(const torch::Tensor& tensor);
  torch::Tensor reduce_scatter(const torch::Tensor& tensor, ReduceOp op);
  void broadcast(torch::Tensor& tensor, int root);
  void batch_isend_irecv(std::vector<P2POp>& ops);
  torch::Tensor all_to_all(const torch::Tensor& tensor, const std::vector<int64_t>& send_counts,
                           const std::vector<int64_t>& recv_counts);

 private:
  void wait(const char* operation);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ladder::parallel
