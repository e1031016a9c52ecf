#include "parallel/data_parallel.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace ladder::parallel {
namespace {

using Clock = std::chrono::steady_clock;

// Adds the time from construction to destruction to `seconds`.
struct CommTimer {
  double& seconds;
  Clock::time_point start = Clock::now();
  ~CommTimer() { seconds += std::chrono::duration<double>(Clock::now() - start).count(); }
};

struct Bucket {
  int64_t start = 0, size = 0;  // elements of the flat buffers; size is a multiple of dp
  std::vector<size_t> tensors;
  int64_t waiting = 0;    // gradients the current backward has not produced yet
  torch::Tensor reduced;  // ZeRO: this rank's chunk of the summed gradient
  PendingCollective work;
  bool launched = false;
  bool late = false;  // holds a tensor of DataParallelOptions::late_tensors
};

}  // namespace

struct DataParallel::State {
  State(const Communicator& comm, const DataParallelOptions& o) : dp(comm), options(o) {}

  const Communicator& dp;
  DataParallelOptions options;
  std::vector<torch::Tensor> params;
  std::vector<int64_t> offset;  // each tensor's first element in the flat buffers
  std::vector<size_t> bucket_of;
  std::vector<Bucket> buckets;
  torch::Tensor param_flat, grad_flat;
  std::vector<FlatRange> whole, shard;
  // Keep the hooks alive (the handle type is c10::intrusive_ptr in LibTorch 2.15).
  std::vector<decltype(torch::autograd::impl::grad_accumulator(torch::Tensor()))> accumulators;
  bool armed = false;  // the last micro-batch's backward is running: buckets reduce as they fill
  size_t next_launch = 0;  // buckets start in index order, the same on every rank
  CommStats stats;

  int64_t chunk(const Bucket& b) const { return b.size / dp.size(); }

  // Bytes each rank sends for a collective over `bytes` with ring algorithms (the bus-bandwidth
  // model of nccl-tests): 2 (n - 1) / n for an all-reduce, (n - 1) / n for a reduce-scatter or an
  // all-gather, so ZeRO-1's pair costs what the all-reduce it replaces does.
  void count(int64_t bytes, bool all_reduce) {
    const int64_t n = dp.size();
    stats.bytes += (all_reduce ? 2 : 1) * (n - 1) * bytes / n;
    ++stats.collectives;
  }

  void launch(Bucket& b) {
    CommTimer timer{stats.seconds};
    const torch::Tensor grads = grad_flat.narrow(0, b.start, b.size);
    b.work = options.shard_optimizer ? dp.reduce_scatter_start(grads, b.reduced)
                                     : dp.all_reduce_start(grads);
    b.launched = true;
    count(b.size * static_cast<int64_t>(sizeof(float)), !options.shard_optimizer);
  }

  // Starts every bucket that is ready, in index order.
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].waiting == 0 &&
           !buckets[next_launch].late)
      launch(buckets[next_launch++]);
  }

  // Lets MPI move the reductions in flight along while the backward pass computes.
  void progress() {
    CommTimer timer{stats.seconds};
    for (size_t b = 0; b < next_launch; ++b)
      buckets[b].work.test();
  }

  void on_grad_ready(size_t tensor) {
    if (!armed) return;
    --buckets[bucket_of[tensor]].waiting;
    launch_ready();
    progress();
  }
};

namespace {

// Runs after a parameter's gradient has been accumulated into its .grad() (a post hook on the
// parameter's AccumulateGrad node, as PyTorch's DDP reducer does).
class GradReadyHook : public torch::autograd::FunctionPostHook {
 public:
  GradReadyHook(std::weak_ptr<DataParallel::State> state, size_t tensor)
      : state_(std::move(state)), tensor_(tensor) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    if (auto state = state_.lock()) state->on_grad_ready(tensor_);
    return outputs;
  }

 private:
  std::weak_ptr<DataParallel::State> state_;
  size_t tensor_;
};

}  // namespace

DataParallel::DataParallel(const std::vector<torch::Tensor>& params, const Communicator& dp,
                           const DataParallelOptions& options)
    : state_(std::make_shared<State>(dp, options)) {
  State& s = *state_;
  s.params = params;
  const int ranks = dp.size();
  if (options.bucket_bytes < 1) throw std::invalid_argument("DataParallel: bucket_bytes < 1");
  int64_t total = 0;
  for (const auto& p : params) {
    if (p.scalar_type() != torch::kFloat32 || !p.is_leaf())  // (a tensor without grad is a leaf)
      throw std::invalid_argument("DataParallel: parameters must be fp32 leaf tensors");
    total += p.numel();
  }
  // Every rank must cut the same buckets: compare the parameter count and size across ranks.
  if (ranks > 1) {
    const int64_t n = static_cast<int64_t>(params.size());
    torch::Tensor mine = torch::tensor({n, total, -n, -total}, torch::kInt64);
    dp.all_reduce(mine, ReduceOp::Max);
    if (mine[0].item<int64_t>() != -mine[2].item<int64_t>() ||
        mine[1].item<int64_t>() != -mine[3].item<int64_t>())
      throw Error("data parallel", "the dp ranks built different models (" + std::to_string(n) +
                                       " parameters, " + std::to_string(total) +
                                       " elements on this rank)");
  }

  // Buckets in reverse registration order, each padded to a multiple of dp elements so that it
  // reduce-scatters into equal chunks.
  s.offset.assign(params.size(), 0);
  s.bucket_of.assign(params.size(), 0);
  int64_t cursor = 0;
  auto close_bucket = [&](Bucket& b) {
    b.size = (cursor - b.start + ranks - 1) / ranks * ranks;
    cursor = b.start + b.size;
    s.buckets.push_back(std::move(b));
    b = Bucket{};
    b.start = cursor;
  };
  Bucket current;
  for (size_t k = params.size(); k-- > 0;) {
    if (!current.tensors.empty() &&
        (cursor - current.start) * static_cast<int64_t>(sizeof(float)) >= options.bucket_bytes)
      close_bucket(current);
    s.offset[k] = cursor;
    s.bucket_of[k] = s.buckets.size();
    current.tensors.push_back(k);
    cursor += params[k].numel();
  }
  if (!current.tensors.empty()) close_bucket(current);
  for (size_t k : options.late_tensors)
    s.buckets.at(s.bucket_of.at(k)).late = true;

  // Move the parameters into the flat buffer and point their gradients into the other one.
  torch::NoGradGuard no_grad;
  const auto options_flat = torch::TensorOptions()
                                .dtype(torch::kFloat32)
                                .device(params.empty() ? torch::kCPU : params[0].device());
  s.param_flat = torch::zeros({cursor}, options_flat);
  s.grad_flat = torch::zeros({cursor}, options_flat);
  if (ranks > 1 && options_flat.device().is_cuda()) {
    // Creates the group's NCCL communicator here, on the thread that owns MPI: the first reduction
    // would otherwise create it from a gradient hook, on the autograd engine's device thread.
    torch::Tensor first = torch::zeros({1}, options_flat);
    dp.all_reduce(first);
  }
  for (size_t k = 0; k < params.size(); ++k) {
    torch::Tensor p = params[k];
    torch::Tensor value = s.param_flat.narrow(0, s.offset[k], p.numel()).view(p.sizes());
    value.copy_(p);
    p.set_data(value);
    p.mutable_grad() = s.grad_flat.narrow(0, s.offset[k], p.numel()).view(p.sizes());
    s.whole.push_back(FlatRange{k, 0, p.numel()});
  }

  // This rank's chunk of every bucket: its ZeRO shard and its share of checkpoint writing.
  for (Bucket& b : s.buckets) {
    const int64_t lo = b.start + dp.rank() * s.chunk(b), hi = lo + s.chunk(b);
    for (size_t k : b.tensors) {
      const int64_t a = std::max(lo, s.offset[k]),
                    e = std::min(hi, s.offset[k] + params[k].numel());
      if (e > a) s.shard.push_back(FlatRange{k, a - s.offset[k], e - a});
    }
    if (options.shard_optimizer && ranks > 1) b.reduced = torch::empty({s.chunk(b)}, options_flat);
  }
  std::sort(s.shard.begin(), s.shard.end(), [](const FlatRange& a, const FlatRange& b) {
    return a.tensor != b.tensor ? a.tensor < b.tensor : a.offset < b.offset;
  });
  s.options.shard_optimizer = options.shard_optimizer && ranks > 1;

  if (ranks > 1 && options.overlap) {
    for (size_t k = 0; k < params.size(); ++k) {
      if (!params[k].requires_grad()) continue;
      auto accumulator = torch::autograd::impl::grad_accumulator(params[k]);
      accumulator->add_post_hook(std::make_unique<GradReadyHook>(state_, k));
      s.accumulators.push_back(std::move(accumulator));
    }
  }
}

DataParallel::~DataParallel() = default;

void DataParallel::zero_grad() {
  state_->grad_flat.zero_();
}

void DataParallel::before_backward(bool last) {
  State& s = *state_;
  s.armed = last && s.options.overlap && s.dp.size() > 1;
  if (!s.armed) return;
  s.next_launch = 0;
  for (Bucket& b : s.buckets) {
    // Tensors that take no gradient (set by a rule of the model) are never waited for.
    b.waiting = std::count_if(b.tensors.begin(), b.tensors.end(),
                              [&](size_t k) { return s.params[k].requires_grad(); });
    b.launched = false;
  }
}

void DataParallel::finish_grad_sync() {
  State& s = *state_;
  s.armed = false;
  if (s.dp.size() == 1) return;
  // Without overlap nothing has started; with it, buckets whose parameters got no gradient (unused
  // in the graph) and those after them in order start now.
  for (Bucket& b : s.buckets)
    if (!b.launched) s.launch(b);
  CommTimer timer{s.stats.seconds};
  for (Bucket& b : s.buckets) {
    b.work.wait();
    b.launched = false;
    if (s.options.shard_optimizer)
      s.grad_flat.narrow(0, b.start + s.dp.rank() * s.chunk(b), s.chunk(b)).copy_(b.reduced);
  }
}

void DataParallel::gather_params() {
  State& s = *state_;
  if (!s.options.shard_optimizer || s.dp.size() == 1) return;
  CommTimer timer{s.stats.seconds};
  std::vector<PendingCollective> works;
  for (Bucket& b : s.buckets) {
    works.push_back(s.dp.all_gather_in_place_start(s.param_flat.narrow(0, b.start, b.size)));
    s.count(b.size * static_cast<int64_t>(sizeof(float)), /*all_reduce=*/false);
  }
  for (auto& w : works)
    w.wait();
}

const std::vector<FlatRange>& DataParallel::owned() const {
  return sharded_optimizer() ? state_->shard : state_->whole;
}

const std::vector<FlatRange>& DataParallel::shard() const {
  return state_->shard;
}

bool DataParallel::sharded_optimizer() const {
  return state_->options.shard_optimizer;  // already false at dp = 1
}

void DataParallel::sum(torch::Tensor& values) const {
  State& s = *state_;
  if (s.dp.size() == 1) return;
  CommTimer timer{s.stats.seconds};
  s.dp.all_reduce(values, ReduceOp::Sum);
  s.count(static_cast<int64_t>(values.numel() * values.element_size()), /*all_reduce=*/true);
}

CommStats DataParallel::take_stats() {
  CommStats out = state_->stats;
  state_->stats = CommStats{};
  return out;
}

int64_t DataParallel::bucket_count() const {
  return static_cast<int64_t>(state_->buckets.size());
}

}  // namespace ladder::parallel
