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

double GlobalGradNorm::compute(const models::ParamStore& params) const {
  double split = grad_square_sum(params, split_);
  double replicated = grad_square_sum(params, replicated_);
  double experts = grad_square_sum(params, experts_);
  const auto f64 = torch::kFloat64;
  if (groups_.sharded_dense) {
    torch::Tensor both = torch::tensor({split, replicated}, f64);
    groups_.sharded_dense->sum(both);
    split = both[0].item<double>(), replicated = both[1].item<double>();
  }
  if (groups_.sharded_experts) experts = groups_.sharded_experts->sum(experts);
  // tp: the split blocks, and the experts when they are split over ep (each tp rank then holds a
  // block of each of its experts).
  const bool ep = several(groups_.ep);
  if (several(groups_.tp)) {
    torch::Tensor parts = torch::tensor({split, ep ? experts : 0.0}, f64);
    groups_.tp->all_reduce(parts);
    split = parts[0].item<double>();
    if (ep) experts = parts[1].item<double>();
  }
  if (ep) {
    torch::Tensor t = torch::tensor({experts}, f64);
    groups_.ep->all_reduce(t);
    experts = t.item<double>();
  }
  double total = split + replicated + experts;
  if (several(groups_.pp)) {
    torch::Tensor t = torch::tensor({total}, f64);
    groups_.pp->all_reduce(t);
    total = t.item<double>();
  }
  return std::sqrt(total);
}

}  // namespace ladder::optim
