#include "optim/grad_norm.h"

#include <cmath>

namespace ladder::optim {

namespace {

bool several(const parallel::Communicator* group) {
  return group && group->size() > 1;
}

}  // namespace

GlobalGradNorm::GlobalGradNorm(const models::ParamStore& params,
                               const std::vector<ParamSegment>& segments, GradNormGroups groups)
    : groups_(groups) {
  for (const auto& s : segments) {
    const models::Param& p = params.all()[s.param];
    if (p.tied_copy) continue;
    (p.experts.split() ? experts_ : p.shard.split() ? split_ : replicated_).push_back(s);
  }
}

torch::Tensor GlobalGradNorm::compute_on_device(const models::ParamStore& params) const {
  const torch::Device device = params.all().front().value.device();
  torch::Tensor split = grad_square_sum_on_device(params, split_, device);
  torch::Tensor replicated = grad_square_sum_on_device(params, replicated_, device);
  torch::Tensor experts = grad_square_sum_on_device(params, experts_, device);
  if (groups_.sharded_dense) {
    torch::Tensor both = torch::stack({split, replicated});
    groups_.sharded_dense->sum(both);
    split = both[0], replicated = both[1];
  }
  if (groups_.sharded_experts) {
    torch::Tensor t = experts.reshape({1});
    groups_.sharded_experts->sum(t);
    experts = t[0];
  }
  // tp: the split blocks, and the experts when they are split over ep (each tp rank then holds a
  // block of each of its experts).
  const bool ep = several(groups_.ep);
  if (several(groups_.tp)) {
    torch::Tensor parts = torch::stack({split, ep ? experts : torch::zeros_like(experts)});
    groups_.tp->all_reduce(parts);
    split = parts[0];
    if (ep) experts = parts[1];
  }
  if (ep) {
    torch::Tensor t = experts.reshape({1});
    groups_.ep->all_reduce(t);
    experts = t[0];
  }
  torch::Tensor total = split + replicated + experts;
  if (several(groups_.pp)) {
    torch::Tensor t = total.reshape({1});
    groups_.pp->all_reduce(t);
    total = t[0];
  }
  return total.sqrt();
}

double GlobalGradNorm::compute(const models::ParamStore& params) const {
  return compute_on_device(params).item<double>();
}

}  // namespace ladder::optim
