#include "parallel/communicator.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "core/error.h"
#include "parallel/nccl_backend.h"

namespace ladder::parallel {
namespace {

std::string describe(const torch::Tensor& t) {
  std::string s = std::string(c10::toString(t.scalar_type())) + " [";
  for (int64_t i = 0; i < t.dim(); ++i)
    s += (i ? ", " : "") + std::to_string(t.size(i));
  s += "] strides [";
  for (int64_t i = 0; i < t.dim(); ++i)
    s += (i ? ", " : "") + std::to_string(t.stride(i));
  return s + "]";
}

void check_tensor(const torch::Tensor& t, const char* operation) {
  if (!t.defined()) throw std::invalid_argument(std::string(operation) + ": undefined tensor");
  if (!t.is_contiguous())
    throw std::invalid_argument(
        std::string(operation) +
        ": non-contiguous tensor refused (call .contiguous()): " + describe(t));
}

// The MPI type that moves the tensor's elements unchanged.
MPI_Datatype wire_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return MPI_FLOAT;
    case torch::kFloat64:
      return MPI_DOUBLE;
    case torch::kInt64:
      return MPI_INT64_T;
    case torch::kInt32:
      return MPI_INT32_T;
    case torch::kBFloat16:
    case torch::kFloat16:
      return MPI_UINT16_T;
    case torch::kUInt8:
      return MPI_UINT8_T;
    default:
      throw std::invalid_argument("collective: unsupported dtype " + std::string(c10::toString(t)));
  }
}

bool reduces_in_fp32(torch::ScalarType t) {
  return t == torch::kBFloat16 || t == torch::kFloat16;
}

// Avg is a sum divided by the group size, truncating for integer tensors.
void divide_for_average(torch::Tensor& t, int size) {
  if (t.is_floating_point())
    t.div_(size);
  else
    t.div_(size, "trunc");
}

MPI_Op mpi_op(ReduceOp op) {
  return op == ReduceOp::Max ? MPI_MAX : MPI_SUM;
}

}  // namespace

Communicator::Communicator(MPI_Comm comm, std::string name, double timeout_s)
    : comm_(comm), name_(std::move(name)), timeout_s_(timeout_s) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  world_ranks_.resize(size_);
  MPI_Allgather(&world_rank, 1, MPI_INT, world_ranks_.data(), 1, MPI_INT, comm_);
}

NcclComm& Communicator::nccl() const {
  if (!nccl_)
    nccl_ = std::make_unique<NcclComm>(comm_, rank_, size_, name_, world_ranks_, timeout_s_);
  return *nccl_;
}

Communicator::~Communicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

Communicator Communicator::world(double timeout_s) {
  return Communicator(MPI_COMM_WORLD, "world", timeout_s);
}

void Communicator::wait(std::vector<MPI_Request>& requests, const char* operation) const {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  int done = 0;
  // Spin briefly (most collectives finish in microseconds), then back off to 100 us naps.
  for (int spins = 0;; ++spins) {
    MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
    if (done) return;
    if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (spins % 1000 == 0 &&
        std::chrono::duration<double>(Clock::now() - start).count() > timeout_s_) {
      std::string ranks;
      for (int r : world_ranks_)
        ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
      int me = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &me);
      const std::string message = "ladder: error: " + std::string(operation) + " on group " +
                                  name_ + " (world ranks " + ranks + ") stalled for more than " +
                                  std::to_string(static_cast<int>(timeout_s_)) +
                                  " s; aborting the job [rank " + std::to_string(me) + "]";
      std::fprintf(stderr, "%s\n", message.c_str());
      spdlog::error("{}", message);
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
  }
}

PendingCollective::PendingCollective() = default;

PendingCollective::PendingCollective(PendingCollective&& other) noexcept {
  *this = std::move(other);
}

PendingCollective& PendingCollective::operator=(PendingCollective&& other) noexcept {
  if (this != &other) {
    if (!done()) wait();
    comm_ = other.comm_;
    request_ = other.request_;
    device_ = std::move(other.device_);
    operation_ = other.operation_;
    finish_ = std::move(other.finish_);
    other.request_ = MPI_REQUEST_NULL;
    other.finish_ = nullptr;
  }
  return *this;
}

PendingCollective::~PendingCollective() {
  if (!done()) wait();
}

void PendingCollective::complete() {
  if (finish_) {
    auto finish = std::move(finish_);
    finish_ = nullptr;
    finish();
  }
}

bool PendingCollective::test() {
  if (device_) {
    if (!device_->test()) return false;
    device_.reset();
  }
  if (request_ != MPI_REQUEST_NULL) {
    int flag = 0;
    MPI_Test(&request_, &flag, MPI_STATUS_IGNORE);
    if (!flag) return false;
  }
  complete();
  return true;
}

void PendingCollective::wait() {
  if (device_) {
    device_->wait();
    device_.reset();
  }
  if (request_ != MPI_REQUEST_NULL) comm_->wait(request_, operation_);
  complete();
}

void Communicator::wait(MPI_Request& request, const char* operation) const {
  std::vector<MPI_Request> requests{request};
  wait(requests, operation);
  request = MPI_REQUEST_NULL;
}

void Communicator::all_reduce(torch::Tensor& tensor, ReduceOp op) const {
  all_reduce_start(tensor, op).wait();
}

PendingCollective Communicator::all_reduce_start(torch::Tensor tensor, ReduceOp op) const {
  check_tensor(tensor, "all_reduce");
  PendingCollective pending;
  if (tensor.is_cuda()) {
    pending.device_ = nccl().all_reduce(tensor, op);
    return pending;
  }
  torch::Tensor work = reduces_in_fp32(tensor.scalar_type()) ? tensor.to(torch::kFloat32) : tensor;
  pending.comm_ = this;
  pending.operation_ = "all_reduce";
  MPI_Iallreduce(MPI_IN_PLACE, work.data_ptr(), static_cast<int>(work.numel()),
                 wire_type(work.scalar_type()), mpi_op(op), comm_, &pending.request_);
  const int size = size_;
  pending.finish_ = [work, tensor, op, size]() mutable {
    if (op == ReduceOp::Avg) divide_for_average(work, size);
    if (!work.is_same(tensor)) tensor.copy_(work);
  };
  return pending;
}

torch::Tensor Communicator::all_gather(const torch::Tensor& tensor) const {
  check_tensor(tensor, "all_gather");
  std::vector<int64_t> shape = tensor.sizes().vec();
  if (shape.empty()) shape.push_back(1);
  shape[0] *= size_;
  torch::Tensor out = torch::empty(shape, tensor.options());
  if (tensor.is_cuda()) {
    nccl().all_gather(tensor, out)->wait();
    return out;
  }
  std::vector<MPI_Request> req(1);
  MPI_Iallgather(tensor.data_ptr(), static_cast<int>(tensor.numel()),
                 wire_type(tensor.scalar_type()), out.data_ptr(), static_cast<int>(tensor.numel()),
                 wire_type(tensor.scalar_type()), comm_, req.data());
  wait(req, "all_gather");
  return out;
}

void Communicator::all_gather_in_place(torch::Tensor& buffer) const {
  all_gather_in_place_start(buffer).wait();
}

PendingCollective Communicator::all_gather_in_place_start(torch::Tensor buffer) const {
  check_tensor(buffer, "all_gather");
  if (buffer.dim() == 0 || buffer.size(0) % size_ != 0)
    throw std::invalid_argument("all_gather: dim 0 (" + std::to_string(buffer.size(0)) +
                                ") must be a multiple of the group size " + std::to_string(size_));
  PendingCollective pending;
  const int64_t block = buffer.numel() / size_;
  if (buffer.is_cuda()) {  // NCCL gathers in place when the input is the rank's block
    pending.device_ = nccl().all_gather(
        buffer.narrow(0, buffer.size(0) / size_ * rank_, buffer.size(0) / size_), buffer);
    return pending;
  }
  pending.comm_ = this;
  pending.operation_ = "all_gather";
  const MPI_Datatype type = wire_type(buffer.scalar_type());
  MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buffer.data_ptr(), static_cast<int>(block),
                 type, comm_, &pending.request_);
  pending.finish_ = [buffer] {};  // keeps the buffer alive while in flight
  return pending;
}

torch::Tensor Communicator::reduce_scatter(const torch::Tensor& tensor, ReduceOp op) const {
  if (tensor.dim() == 0 || tensor.size(0) % size_ != 0)
    throw std::invalid_argument("reduce_scatter: dim 0 (" + std::to_string(tensor.size(0)) +
                                ") must be a multiple of the group size " + std::to_string(size_));
  std::vector<int64_t> shape = tensor.sizes().vec();
  shape[0] /= size_;
  torch::Tensor out = torch::empty(shape, tensor.options());
  reduce_scatter_start(tensor, out, op).wait();
  return out;
}

PendingCollective Communicator::reduce_scatter_start(torch::Tensor tensor, torch::Tensor out,
                                                     ReduceOp op) const {
  check_tensor(tensor, "reduce_scatter");
  check_tensor(out, "reduce_scatter");
  if (tensor.dim() == 0 || tensor.size(0) % size_ != 0)
    throw std::invalid_argument("reduce_scatter: dim 0 (" + std::to_string(tensor.size(0)) +
                                ") must be a multiple of the group size " + std::to_string(size_));
  if (out.numel() * size_ != tensor.numel() || out.scalar_type() != tensor.scalar_type())
    throw std::invalid_argument("reduce_scatter: the output must hold 1/" + std::to_string(size_) +
                                " of the input, in its dtype");
  PendingCollective pending;
  if (tensor.is_cuda()) {
    pending.device_ = nccl().reduce_scatter(tensor, out, op);
    return pending;
  }
  const bool upcast = reduces_in_fp32(tensor.scalar_type());
  const torch::Tensor in = upcast ? tensor.to(torch::kFloat32) : tensor;
  torch::Tensor work = upcast ? torch::empty(out.sizes(), in.options()) : out;
  pending.comm_ = this;
  pending.operation_ = "reduce_scatter";
  MPI_Ireduce_scatter_block(in.data_ptr(), work.data_ptr(), static_cast<int>(work.numel()),
                            wire_type(in.scalar_type()), mpi_op(op), comm_, &pending.request_);
  const int size = size_;
  pending.finish_ = [in, work, out, op, size]() mutable {
    if (op == ReduceOp::Avg) divide_for_average(work, size);
    if (!work.is_same(out)) out.copy_(work);
  };
  return pending;
}

void Communicator::broadcast(torch::Tensor& tensor, int root) const {
  check_tensor(tensor, "broadcast");
  if (tensor.is_cuda()) return nccl().broadcast(tensor, root)->wait();
  std::vector<MPI_Request> req(1);
  MPI_Ibcast(tensor.data_ptr(), static_cast<int>(tensor.numel()), wire_type(tensor.scalar_type()),
             root, comm_, req.data());
  wait(req, "broadcast");
}

void Communicator::send(const torch::Tensor& tensor, int peer, int tag) const {
  std::vector<P2POp> ops{{P2POp::Send, tensor, peer, tag}};
  batch_isend_irecv(ops);
}

void Communicator::recv(torch::Tensor& tensor, int peer, int tag) const {
  std::vector<P2POp> ops{{P2POp::Recv, tensor, peer, tag}};
  batch_isend_irecv(ops);
}

void Communicator::batch_isend_irecv(std::vector<P2POp>& ops) const {
  if (!ops.empty() && ops[0].tensor.defined() && ops[0].tensor.is_cuda())
    return nccl().batch_isend_irecv(ops)->wait();
  std::vector<MPI_Request> req(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    auto& op = ops[i];
    check_tensor(op.tensor, op.kind == P2POp::Send ? "send" : "recv");
    const int n = static_cast<int>(op.tensor.numel());
    const MPI_Datatype type = wire_type(op.tensor.scalar_type());
    if (op.kind == P2POp::Send)
      MPI_Isend(op.tensor.data_ptr(), n, type, op.peer, op.tag, comm_, &req[i]);
    else
      MPI_Irecv(op.tensor.data_ptr(), n, type, op.peer, op.tag, comm_, &req[i]);
  }
  wait(req, "send/recv");
}

torch::Tensor Communicator::all_to_all(const torch::Tensor& tensor,
                                       const std::vector<int64_t>& send_counts,
                                       const std::vector<int64_t>& recv_counts) const {
  check_tensor(tensor, "all_to_all");
  if (static_cast<int>(send_counts.size()) != size_ ||
      static_cast<int>(recv_counts.size()) != size_)
    throw std::invalid_argument("all_to_all: one send and one receive count per rank");
  int64_t sent = 0, received = 0;
  for (int r = 0; r < size_; ++r)
    sent += send_counts[r], received += recv_counts[r];
  if (tensor.dim() == 0 || sent != tensor.size(0))
    throw std::invalid_argument("all_to_all: send counts sum to " + std::to_string(sent) +
                                " rows but the tensor has " + std::to_string(tensor.size(0)));
  // Elements per row from the shape: a rank may send no rows and still receive some.
  int64_t row = 1;
  for (int64_t d = 1; d < tensor.dim(); ++d)
    row *= tensor.size(d);
  std::vector<int> scounts(size_), sdispls(size_), rcounts(size_), rdispls(size_);
  int64_t s_off = 0, r_off = 0;
  for (int r = 0; r < size_; ++r) {
    scounts[r] = static_cast<int>(send_counts[r] * row), sdispls[r] = static_cast<int>(s_off);
    rcounts[r] = static_cast<int>(recv_counts[r] * row), rdispls[r] = static_cast<int>(r_off);
    s_off += scounts[r], r_off += rcounts[r];
  }
  std::vector<int64_t> shape = tensor.sizes().vec();
  shape[0] = received;
  torch::Tensor out = torch::empty(shape, tensor.options());
  if (tensor.is_cuda()) {
    nccl().all_to_all(tensor, out, send_counts, recv_counts)->wait();
    return out;
  }
  const MPI_Datatype type = wire_type(tensor.scalar_type());
  std::vector<MPI_Request> req(1);
  MPI_Ialltoallv(tensor.data_ptr(), scounts.data(), sdispls.data(), type, out.data_ptr(),
                 rcounts.data(), rdispls.data(), type, comm_, req.data());
  wait(req, "all_to_all");
  return out;
}

void Communicator::barrier() const {
  std::vector<MPI_Request> req(1);
  MPI_Ibarrier(comm_, req.data());
  wait(req, "barrier");
}

std::unique_ptr<Communicator> Communicator::split(int color, int key,
                                                  const std::string& name) const {
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_Comm_split(comm_, color, key, &sub);
  return std::make_unique<Communicator>(sub, name, timeout_s_);
}

}  // namespace ladder::parallel
