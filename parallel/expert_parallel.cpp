#include "parallel/expert_parallel.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "core/format.h"

namespace ladder::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Rows send[r] of x to rank r, recv[r] rows from rank r; the backward pass sends the gradients
// back the way the rows came. The group and the statistics travel as their addresses (both
// outlive the graph), as in tensor_parallel.cpp.
struct AllToAllRows : torch::autograd::Function<AllToAllRows> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               std::vector<int64_t> send, std::vector<int64_t> recv,
                               std::vector<int64_t> handles) {
    ctx->saved_data["send"] = send;
    ctx->saved_data["recv"] = recv;
    ctx->saved_data["handles"] = handles;
    return exchange(x, send, recv, handles);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    const auto send = ctx->saved_data["send"].toIntVector();
    const auto recv = ctx->saved_data["recv"].toIntVector();
    return {exchange(grad[0], recv, send, ctx->saved_data["handles"].toIntVector()),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
  // Bytes counted as sent: the rows leaving this rank.
  static torch::Tensor exchange(const torch::Tensor& x, const std::vector<int64_t>& send,
                                const std::vector<int64_t>& recv,
                                const std::vector<int64_t>& handles) {
    const auto* group = reinterpret_cast<const Communicator*>(handles[0]);
    auto* stats = reinterpret_cast<CommStats*>(handles[1]);
    const auto start = std::chrono::steady_clock::now();
    torch::Tensor out = group->all_to_all(x.contiguous(), send, recv);
    if (stats) {
      const int64_t row_bytes = x.size(0) > 0 ? x.numel() / x.size(0) * x.element_size() : 0;
      int64_t rows = 0;
      for (int r = 0; r < group->size(); ++r)
        rows += r == group->rank() ? 0 : send[r];
      stats->seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      stats->bytes += rows * row_bytes;
      ++stats->collectives;
    }
    return out;
  }
};

std::vector<int64_t> handles_of(const ExpertParallel& ep) {
  return {reinterpret_cast<int64_t>(ep.group), reinterpret_cast<int64_t>(ep.stats)};
}

}  // namespace

ExpertDispatch plan_dispatch(const torch::Tensor& load, int64_t experts, const ExpertParallel& ep) {
  const int ranks = ep.size();
  const int64_t local = experts / ranks;
  const torch::Tensor mine = load.to(torch::kCPU, torch::kInt64).contiguous();
  ExpertDispatch plan;
  // counts[s][e]: rows rank s sends to this rank's local expert e.
  const torch::Tensor counts =
      ep.group
          ->all_to_all(mine, std::vector<int64_t>(ranks, local), std::vector<int64_t>(ranks, local))
          .view({ranks, local});
  const torch::Tensor sent = mine.view({ranks, local}).sum(1);
  const torch::Tensor received = counts.sum(1);
  plan.send.assign(sent.data_ptr<int64_t>(), sent.data_ptr<int64_t>() + ranks);
  plan.recv.assign(received.data_ptr<int64_t>(), received.data_ptr<int64_t>() + ranks);
  plan.local_load = counts.sum(0);
  // The received rows come by source rank, each source's by expert; the grouped products want them
  // by expert. Block (s, e) starts at start[s][e].
  const torch::Tensor start =
      (counts.reshape({-1}).cumsum(0) - counts.reshape({-1})).view_as(counts);
  const int64_t total = counts.sum().item<int64_t>();
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(total));
  const auto c = counts.accessor<int64_t, 2>();
  const auto s0 = start.accessor<int64_t, 2>();
  for (int64_t e = 0; e < local; ++e)
    for (int s = 0; s < ranks; ++s)
      for (int64_t i = 0; i < c[s][e]; ++i)
        order.push_back(s0[s][e] + i);
  plan.to_expert_major = torch::tensor(order, torch::kInt64).to(load.device());
  plan.from_expert_major = torch::empty_like(plan.to_expert_major);
  if (total > 0)
    plan.from_expert_major.index_copy_(
        0, plan.to_expert_major,
        torch::arange(total, torch::TensorOptions(torch::kInt64).device(load.device())));
  return plan;
}

torch::Tensor dispatch_rows(const torch::Tensor& rows, const ExpertDispatch& plan,
                            const ExpertParallel& ep) {
  const torch::Tensor received = AllToAllRows::apply(rows, plan.send, plan.recv, handles_of(ep));
  return received.index_select(0, plan.to_expert_major);
}

torch::Tensor combine_rows(const torch::Tensor& rows, const ExpertDispatch& plan,
                           const ExpertParallel& ep) {
  return AllToAllRows::apply(rows.index_select(0, plan.from_expert_major), plan.recv, plan.send,
                             handles_of(ep));
}

std::string describe_expert_parallel_interval(int64_t step, double seconds_per_step,
                                              double bytes_per_step) {
  return fmt::format("expert parallel step {} | all-to-all {:.0f} ms ({}B) per step inside compute",
                     step, 1e3 * seconds_per_step, human_count(bytes_per_step));
}

std::string describe_expert_parallel(const ExpertParallel& ep, int64_t experts, int expert_dp) {
  return fmt::format(
      "expert parallel: ep={}: {} of {} experts per rank, their gradients reduced over {} rank{}",
      ep.size(), experts / ep.size(), experts, expert_dp, expert_dp == 1 ? "" : "s");
}

}  // namespace ladder::parallel
