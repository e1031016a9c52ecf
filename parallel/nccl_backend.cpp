#include "parallel/nccl_backend.h"

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
  cudaStream_t stream = cudaStreamLegacy;
  int size = 1;
  std::string name;
  std::vector<int> world_ranks;
  double timeout_s = 300;
};

NcclComm::NcclComm(MPI_Comm group, int rank, int size, std::string name,
                   std::vector<int> world_ranks, double timeout_s)
    : impl_(std::make_unique<Impl>()) {
  impl_->size = size;
  impl_->name = std::move(name);
  impl_->world_ranks = std::move(world_ranks);
  impl_->timeout_s = timeout_s;
  ncclUniqueId id;
  if (rank == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, group);
  check_nccl(ncclCommInitRank(&impl_->comm, size, id, rank), "ncclCommInitRank");
}

NcclComm::~NcclComm() {
  if (impl_->comm) ncclCommDestroy(impl_->comm);
}

void NcclComm::wait(const char* operation) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (;;) {
    const cudaError_t q = cudaStreamQuery(impl_->stream);
    if (q == cudaSuccess) return;
    if (q != cudaErrorNotReady) check_cuda(q, operation);
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(impl_->comm, &async);
    check_nccl(async, operation);
    if (std::chrono::duration<double>(Clock::now() - start).count() > impl_->timeout_s) {
      std::string ranks;
      for (int r : impl_->world_ranks)
        ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
      std::fprintf(stderr,
                   "ladder: error: %s (NCCL) on group %s (world ranks %s) stalled for more than "
                   "%d s; aborting the job\n",
                   operation, impl_->name.c_str(), ranks.c_str(), int(impl_->timeout_s));
      ncclCommAbort(impl_->comm);
      impl_->comm = nullptr;
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void NcclComm::all_reduce(torch::Tensor& t, ReduceOp op) {
  check_nccl(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                           nccl_op(op), impl_->comm, impl_->stream),
             "all_reduce");
  wait("all_reduce");
}

torch::Tensor NcclComm::all_gather(const torch::Tensor& t) {
  std::vector<int64_t> shape = t.sizes().vec();
  if (shape.empty()) shape.push_back(1);
  shape[0] *= impl_->size;
  torch::Tensor out = torch::empty(shape, t.options());
  check_nccl(ncclAllGather(t.data_ptr(), out.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                           impl_->comm, impl_->stream),
             "all_gather");
  wait("all_gather");
  return out;
}

torch::Tensor NcclComm::reduce_scatter(const torch::Tensor& t, ReduceOp op) {
  std::vector<int64_t> shape = t.sizes().vec();
  shape[0] /= impl_->size;
  torch::Tensor out = torch::empty(shape, t.options());
  check_nccl(ncclReduceScatter(t.data_ptr(), out.data_ptr(), out.numel(),
                               nccl_type(t.scalar_type()), nccl_op(op), impl_->comm, impl_->stream),
             "reduce_scatter");
  wait("reduce_scatter");
  return out;
}

void NcclComm::broadcast(torch::Tensor& t, int root) {
  check_nccl(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), root,
                           impl_->comm, impl_->stream),
             "broadcast");
  wait("broadcast");
}

void NcclComm::batch_isend_irecv(std::vector<P2POp>& ops) {
  check_nccl(ncclGroupStart(), "group start");
  for (auto& op : ops) {
    if (op.kind == P2POp::Send)
      check_nccl(ncclSend(op.tensor.data_ptr(), op.tensor.numel(),
                          nccl_type(op.tensor.scalar_type()), op.peer, impl_->comm, impl_->stream),
                 "send");
    else
      check_nccl(ncclRecv(op.tensor.data_ptr(), op.tensor.numel(),
                          nccl_type(op.tensor.scalar_type()), op.peer, impl_->comm, impl_->stream),
                 "recv");
  }
  check_nccl(ncclGroupEnd(), "group end");
  wait("send/recv");
}

torch::Tensor NcclComm::all_to_all(const torch::Tensor& t, const std::vector<int64_t>& send_counts,
                                   const std::vector<int64_t>& recv_counts) {
  // NCCL has no all-to-all-v: grouped sends and receives of each peer's rows.
  const int64_t row = t.numel() / std::max<int64_t>(1, t.size(0));
  int64_t received = 0;
  for (int64_t c : recv_counts)
    received += c;
  std::vector<int64_t> shape = t.sizes().vec();
  shape[0] = received;
  torch::Tensor out = torch::empty(shape, t.options());
  const ncclDataType_t type = nccl_type(t.scalar_type());
  const size_t elem = t.element_size();
  auto* src = static_cast<char*>(t.data_ptr());
  auto* dst = static_cast<char*>(out.data_ptr());
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
  wait("all_to_all");
  return out;
}

}  // namespace ladder::parallel
