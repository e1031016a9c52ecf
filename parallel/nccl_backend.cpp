#include "parallel/nccl_backend.h"

#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "core/error.h"
#include "parallel/communicator.h"

namespace ladder::parallel {
namespace {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess && r != ncclInProgress)
    throw std::runtime_error(std::string("NCCL ") + what + ": " + ncclGetErrorString(r));
}

void check_cuda(cudaError_t r, const char* what) {
  if (r != cudaSuccess)
    throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(r));
}

ncclDataType_t nccl_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return ncclFloat32;
    case torch::kFloat64:
      return ncclFloat64;
    case torch::kBFloat16:
      return ncclBfloat16;
    case torch::kFloat16:
      return ncclFloat16;
    case torch::kInt64:
      return ncclInt64;
    case torch::kInt32:
      return ncclInt32;
    case torch::kUInt8:
      return ncclUint8;
    default:
      throw std::invalid_argument("NCCL: unsupported dtype " + std::string(c10::toString(t)));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return ncclSum;
    case ReduceOp::Avg:
      return ncclAvg;
    case ReduceOp::Max:
      return ncclMax;
  }
  return ncclSum;
}

}  // namespace

struct NcclComm::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;  // the communicator's own stream
  int size = 1;
  std::string name;
  std::vector<int> world_ranks;
  double timeout_s = 300;

  // Aborts the job when `operation` has not completed within the timeout.
  void abort_stalled(const char* operation) {
    std::string ranks;
    for (int r : world_ranks)
      ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
    std::fprintf(stderr,
                 "ladder: error: %s (NCCL) on group %s (world ranks %s) stalled for more than "
                 "%d s; aborting the job\n",
                 operation, name.c_str(), ranks.c_str(), int(timeout_s));
    ncclCommAbort(comm);
    comm = nullptr;
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
};

struct NcclWork::Impl {
  std::shared_ptr<NcclComm::Impl> comm;
  const char* operation = "";
  cudaEvent_t done = nullptr;
  std::vector<torch::Tensor> keep_alive;  // the tensors the stream reads or writes
  bool complete = false;
};

NcclWork::NcclWork(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

NcclWork::~NcclWork() {
  try {
    if (!impl_->complete) wait();
  } catch (const std::exception& e) {  // a destructor must not throw; the job is lost anyway
    std::fprintf(stderr, "ladder: error: %s (NCCL): %s\n", impl_->operation, e.what());
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  cudaEventDestroy(impl_->done);
}

bool NcclWork::test() {
  if (impl_->complete) return true;
  const cudaError_t q = cudaEventQuery(impl_->done);
  if (q == cudaErrorNotReady) return false;
  check_cuda(q, impl_->operation);
  impl_->complete = true;
  impl_->keep_alive.clear();
  return true;
}

void NcclWork::wait() {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  while (!test()) {
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(impl_->comm->comm, &async);
    check_nccl(async, impl_->operation);
    if (std::chrono::duration<double>(Clock::now() - start).count() > impl_->comm->timeout_s)
      impl_->comm->abort_stalled(impl_->operation);
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

namespace {

// Enqueues `body` on the communicator's stream after the caller's queued work; returns its work.
template <typename Body>
std::unique_ptr<NcclWork> enqueue(const std::shared_ptr<NcclComm::Impl>& comm,
                                  const char* operation, std::vector<torch::Tensor> tensors,
                                  Body body) {
  auto work = std::make_unique<NcclWork::Impl>();
  work->comm = comm;
  work->operation = operation;
  work->keep_alive = std::move(tensors);
  cudaEvent_t ready = nullptr;
  check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), operation);
  check_cuda(cudaEventRecord(ready, c10::cuda::getCurrentCUDAStream().stream()), operation);
  check_cuda(cudaStreamWaitEvent(comm->stream, ready, 0), operation);
  cudaEventDestroy(ready);  // released once recorded work completes
  body();
  check_cuda(cudaEventCreateWithFlags(&work->done, cudaEventDisableTiming), operation);
  check_cuda(cudaEventRecord(work->done, comm->stream), operation);
  return std::make_unique<NcclWork>(std::move(work));
}

}  // namespace

NcclComm::NcclComm(MPI_Comm group, int rank, int size, std::string name,
                   std::vector<int> world_ranks, double timeout_s)
    : impl_(std::make_shared<Impl>()) {
  impl_->size = size;
  impl_->name = std::move(name);
  impl_->world_ranks = std::move(world_ranks);
  impl_->timeout_s = timeout_s;
  check_cuda(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking), "stream create");
  ncclUniqueId id;
  if (rank == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, group);
  check_nccl(ncclCommInitRank(&impl_->comm, size, id, rank), "ncclCommInitRank");
}

NcclComm::~NcclComm() {
  if (impl_->comm) ncclCommDestroy(impl_->comm);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

std::unique_ptr<NcclWork> NcclComm::all_reduce(torch::Tensor t, ReduceOp op) {
  return enqueue(impl_, "all_reduce", {t}, [&] {
    check_nccl(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                             nccl_op(op), impl_->comm, impl_->stream),
               "all_reduce");
  });
}

std::unique_ptr<NcclWork> NcclComm::all_gather(torch::Tensor in, torch::Tensor out) {
  return enqueue(impl_, "all_gather", {in, out}, [&] {
    check_nccl(ncclAllGather(in.data_ptr(), out.data_ptr(), in.numel(), nccl_type(in.scalar_type()),
                             impl_->comm, impl_->stream),
               "all_gather");
  });
}

std::unique_ptr<NcclWork> NcclComm::reduce_scatter(torch::Tensor in, torch::Tensor out,
                                                   ReduceOp op) {
  return enqueue(impl_, "reduce_scatter", {in, out}, [&] {
    check_nccl(
        ncclReduceScatter(in.data_ptr(), out.data_ptr(), out.numel(), nccl_type(in.scalar_type()),
                          nccl_op(op), impl_->comm, impl_->stream),
        "reduce_scatter");
  });
}

std::unique_ptr<NcclWork> NcclComm::broadcast(torch::Tensor t, int root) {
  return enqueue(impl_, "broadcast", {t}, [&] {
    check_nccl(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                             root, impl_->comm, impl_->stream),
               "broadcast");
  });
}

std::unique_ptr<NcclWork> NcclComm::batch_isend_irecv(std::vector<P2POp>& ops) {
  std::vector<torch::Tensor> tensors;
  for (auto& op : ops)
    tensors.push_back(op.tensor);
  return enqueue(impl_, "send/recv", tensors, [&] {
    check_nccl(ncclGroupStart(), "group start");
    for (auto& op : ops) {
      if (op.kind == P2POp::Send)
        check_nccl(
            ncclSend(op.tensor.data_ptr(), op.tensor.numel(), nccl_type(op.tensor.scalar_type()),
                     op.peer, impl_->comm, impl_->stream),
            "send");
      else
        check_nccl(
            ncclRecv(op.tensor.data_ptr(), op.tensor.numel(), nccl_type(op.tensor.scalar_type()),
                     op.peer, impl_->comm, impl_->stream),
            "recv");
    }
    check_nccl(ncclGroupEnd(), "group end");
  });
}

std::unique_ptr<NcclWork> NcclComm::all_to_all(torch::Tensor in, torch::Tensor out,
                                               const std::vector<int64_t>& send_counts,
                                               const std::vector<int64_t>& recv_counts) {
  // NCCL has no all-to-all-v: grouped sends and receives of each peer's rows.
  int64_t row = 1;  // from the shape: a rank may send no rows and still receive some
  for (int64_t d = 1; d < in.dim(); ++d)
    row *= in.size(d);
  const ncclDataType_t type = nccl_type(in.scalar_type());
  const size_t elem = in.element_size();
  auto* src = static_cast<char*>(in.data_ptr());
  auto* dst = static_cast<char*>(out.data_ptr());
  return enqueue(impl_, "all_to_all", {in, out}, [&] {
    check_nccl(ncclGroupStart(), "group start");
    int64_t s_off = 0, r_off = 0;
    for (int r = 0; r < impl_->size; ++r) {
      if (send_counts[r] > 0)
        check_nccl(ncclSend(src + s_off * row * elem, send_counts[r] * row, type, r, impl_->comm,
                            impl_->stream),
                   "all_to_all send");
      if (recv_counts[r] > 0)
        check_nccl(ncclRecv(dst + r_off * row * elem, recv_counts[r] * row, type, r, impl_->comm,
                            impl_->stream),
                   "all_to_all recv");
      s_off += send_counts[r], r_off += recv_counts[r];
    }
    check_nccl(ncclGroupEnd(), "group end");
  });
}

}  // namespace ladder::parallel
