// Collectives over a group of ranks on LibTorch tensors (DESIGN.md "Process mesh").
//
// The MPI backend serves CPU tensors and is always built. fp32, fp64 and int64 map to MPI types;
// bf16 and fp16 move as 16-bit words and are reduced in fp32 (upcast, reduce, round once), which is
// also the more accurate sum. Inputs must be contiguous: a non-contiguous tensor is refused with
// its shape and strides rather than copied behind the caller's back. CUDA tensors go to the NCCL
// backend (nccl_backend.h), on its own stream; the *_start operations return at once for both.
//
// Every blocking operation is non-blocking MPI underneath, polled against a deadline: a collective
// that does not finish within the timeout logs which operation, group and ranks stalled, then
// aborts the job (DESIGN contract 7: nothing hangs silently).
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace ladder::parallel {

class NcclComm;
class NcclWork;

enum class ReduceOp { Sum, Avg, Max };

// One point-to-point transfer of a batch (batch_isend_irecv).
struct P2POp {
  enum Kind { Send, Recv } kind;
  torch::Tensor tensor;  // the data to send, or the buffer to receive into
  int peer;              // rank within the group
  int tag = 0;
};

class Communicator;

// Communication of one interval: time this rank spent inside communication calls (what the
// backward pass did not hide) and the bytes it sent under the ring model of nccl-tests' bus
// bandwidth (an all-reduce of S bytes over n ranks: 2 (n - 1) / n x S; a reduce-scatter or an
// all-gather: (n - 1) / n x S). MPI may pick other algorithms for small messages.
struct CommStats {
  double seconds = 0;
  int64_t bytes = 0;
  int64_t collectives = 0;
};

// A collective in flight, returned by the *_start operations, which data parallelism uses to
// overlap gradient reduction with the backward pass. test() lets MPI progress it without blocking
// (Open MPI advances non-blocking collectives only inside MPI calls); wait() completes it under the
// communicator's timeout. The tensors involved stay alive until then; destroying an unfinished one
// waits for it.
class PendingCollective {
 public:
  PendingCollective();  // already complete
  PendingCollective(PendingCollective&& other) noexcept;
  PendingCollective& operator=(PendingCollective&& other) noexcept;
  PendingCollective(const PendingCollective&) = delete;
  PendingCollective& operator=(const PendingCollective&) = delete;
  ~PendingCollective();

  bool test();  // true once complete (and finished)
  void wait();
  bool done() const { return request_ == MPI_REQUEST_NULL && !device_ && !finish_; }

 private:
  friend class Communicator;
  void complete();  // runs finish_ once the request is done

  const Communicator* comm_ = nullptr;
  MPI_Request request_ = MPI_REQUEST_NULL;  // CPU tensors: the MPI request
  std::unique_ptr<NcclWork> device_;        // CUDA tensors: the NCCL work on its stream
  const char* operation_ = "";
  std::function<void()> finish_;  // after completion: the average's division, a copy back
};

class Communicator {
 public:
  // Wraps `comm` (owned: freed on destruction unless it is MPI_COMM_WORLD). `name` names the group
  // in messages ("world", "tp", "dp", ...).
  Communicator(MPI_Comm comm, std::string name, double timeout_s = 300);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  static Communicator world(double timeout_s = 300);

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }
  const std::vector<int>& world_ranks() const { return world_ranks_; }  // member i's world rank
  double timeout() const { return timeout_s_; }
  MPI_Comm handle() const { return comm_; }  // for MPI-IO (parallel HDF5)
  void set_timeout(double seconds) { timeout_s_ = seconds; }

  void all_reduce(torch::Tensor& tensor, ReduceOp op = ReduceOp::Sum) const;
  PendingCollective all_reduce_start(torch::Tensor tensor, ReduceOp op = ReduceOp::Sum) const;
  // Concatenates every rank's tensor along dim 0, in rank order.
  torch::Tensor all_gather(const torch::Tensor& tensor) const;
  // Reduces across ranks and keeps this rank's block of size(0) / size() rows.
  torch::Tensor reduce_scatter(const torch::Tensor& tensor, ReduceOp op = ReduceOp::Sum) const;
  // The same into `out` (size(0) / size() rows of `tensor`, same dtype), without blocking.
  PendingCollective reduce_scatter_start(torch::Tensor tensor, torch::Tensor out,
                                         ReduceOp op = ReduceOp::Sum) const;
  // `buffer` holds size() blocks of rows; this rank's block is its contribution, and the others
  // are filled with the other ranks' blocks (MPI_IN_PLACE: no extra copy).
  void all_gather_in_place(torch::Tensor& buffer) const;
  PendingCollective all_gather_in_place_start(torch::Tensor buffer) const;
  void broadcast(torch::Tensor& tensor, int root) const;
  void send(const torch::Tensor& tensor, int peer, int tag = 0) const;
  void recv(torch::Tensor& tensor, int peer, int tag = 0) const;
  // Posts every send and receive at once and waits for all (no ordering deadlocks in rings).
  void batch_isend_irecv(std::vector<P2POp>& ops) const;
  // Rows send_counts[r] of `tensor` (dim 0, in rank order) go to rank r; returns the rows received,
  // recv_counts[r] from rank r, in rank order. Uneven counts are the point (expert parallelism).
  torch::Tensor all_to_all(const torch::Tensor& tensor, const std::vector<int64_t>& send_counts,
                           const std::vector<int64_t>& recv_counts) const;
  void barrier() const;

  // A sub-group of this one: ranks with the same color, ordered by key (MPI_Comm_split).
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) const;

 private:
  friend class PendingCollective;
  // Waits for the requests, aborting the job with a message after the timeout.
  void wait(std::vector<MPI_Request>& requests, const char* operation) const;
  void wait(MPI_Request& request, const char* operation) const;
  // The group's NCCL communicator, created on its first CUDA collective (NCCL builds only).
  NcclComm& nccl() const;

  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_ranks_;
  double timeout_s_;
  mutable std::unique_ptr<NcclComm> nccl_;
};

}  // namespace ladder::parallel
