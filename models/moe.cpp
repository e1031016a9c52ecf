#include "models/moe.h"

#include <ATen/autocast_mode.h>
#include <spdlog/spdlog.h>

#include <cmath>

#include "core/format.h"
#include "kernels/swiglu.h"
#include "models/blocks.h"
#include "models/precision.h"

namespace ladder::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Identity on the layer's output forward; backward, the auxiliary loss receives the gradient
// `scale` (its weight times the trainer's objective scale). The losses thus reach the backward
// pass of whichever pipeline stage holds the layer, without travelling to the last stage
// (Megatron-Core's MoEAuxLossAutoScaler does the same).
struct AttachAuxiliaryLoss : torch::autograd::Function<AttachAuxiliaryLoss> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& output,
                               const torch::Tensor& loss, double scale) {
    ctx->saved_data["scale"] = scale;
    ctx->save_for_backward({loss});
    return output.view_as(output);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grad) {
    const torch::Tensor loss = ctx->get_saved_variables()[0];
    return {grad[0], torch::full_like(loss, ctx->saved_data["scale"].toDouble()), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor grouped_linear(const torch::Tensor& x_in, const torch::Tensor& w_in,
                             const torch::Tensor& ends) {
  torch::Tensor x = x_in, w = w_in;
  const c10::DeviceType device = x.device().type();
  if (at::autocast::is_autocast_enabled(device)) {
    // at::_grouped_mm has no autocast rule: cast here (the weight's cast is cached per step).
    const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
    x = at::autocast::cached_cast(dtype, x, device);
    w = at::autocast::cached_cast(dtype, w, device);
  }
  const int64_t out = w.size(1), in = w.size(2), bytes = x.element_size();
  // The grouped kernel takes fp32 and bf16 on the CPU, bf16 only on CUDA (Hopper's).
  const bool supported =
      w.scalar_type() == x.scalar_type() &&
      (x.scalar_type() == torch::kBFloat16 || (x.scalar_type() == torch::kFloat32 && !x.is_cuda()));
  if (supported && (in * bytes) % 16 == 0 && (out * bytes) % 16 == 0 && x.size(0) > 0)
    return at::_grouped_mm(x.contiguous(), w.transpose(1, 2),
                           ends.to(torch::kInt32).to(x.device()));
  const torch::Tensor host_ends = ends.to(torch::kCPU, torch::kInt64);
  const int64_t* e = host_ends.data_ptr<int64_t>();
  std::vector<torch::Tensor> parts;
  int64_t begin = 0;
  for (int64_t g = 0; g < host_ends.numel(); ++g) {
    if (e[g] > begin) parts.push_back(torch::matmul(x.narrow(0, begin, e[g] - begin), w[g].t()));
    begin = e[g];
  }
  // No rows at all (a rank whose experts got none): an empty product that keeps the graph, so the
  // backward pass still reaches the collectives before it on every rank.
  return parts.empty() ? torch::matmul(x, w[0].t()) : torch::cat(parts);
}

Routing route(const torch::Tensor& logits, const MoeConfig& c,
              const torch::Tensor& selection_bias) {
  const torch::Tensor scores = c.gate == Gate::Sigmoid ? logits.sigmoid() : logits.softmax(-1);
  const torch::Tensor choice =
      selection_bias.defined() ? scores.detach() + selection_bias : scores.detach();
  Routing r;
  r.experts = std::get<1>(choice.topk(c.top_k, -1));
  torch::Tensor weights = scores.gather(-1, r.experts);
  if (c.top_k > 1) weights = weights / weights.sum(-1, /*keepdim=*/true);
  r.weights = weights;
  r.probs = c.gate == Gate::Sigmoid ? scores / scores.sum(-1, /*keepdim=*/true) : scores;
  return r;
}

torch::Tensor load_balancing_loss(const Routing& routing, int64_t experts) {
  const int64_t assignments = routing.experts.numel();
  const torch::Tensor fraction =
      torch::bincount(routing.experts.reshape({-1}), {}, experts).to(routing.probs.dtype()) /
      static_cast<double>(assignments);
  return static_cast<double>(experts) * (fraction * routing.probs.mean(0)).sum();
}

std::string describe_routing(int64_t step, const RoutingSummary& s) {
  return fmt::format(
      "experts step {} | aux loss {:.4f} | router z-loss {:.3f} | load max/mean {:.2f} | load cv "
      "{:.3f} | dropped {:.2f}%",
      step, s.aux_loss, s.z_loss, s.load_max_over_mean, s.load_cv, 100 * s.dropped_fraction);
}

RoutingSummary summarize_routing(const torch::Tensor& counts) {
  const int64_t experts = counts.size(1) - kRoutingExtras;
  const torch::Tensor load = counts.narrow(1, 0, experts);
  const torch::Tensor extras = counts.narrow(1, experts, kRoutingExtras);
  const torch::Tensor mean = load.mean(1).clamp_min(1e-30);
  RoutingSummary s;
  s.load_max_over_mean = (std::get<0>(load.max(1)) / mean).mean().item<double>();
  s.load_cv = (load.std(1, /*unbiased=*/false) / mean).mean().item<double>();
  const torch::Tensor total = extras.sum(0);
  const double forwards = std::max(total[kForwards].item<double>(), 1.0);
  s.aux_loss = total[kAuxLoss].item<double>() / forwards;
  s.z_loss = total[kZLoss].item<double>() / forwards;
  s.dropped_fraction =
      total[kDropped].item<double>() / std::max(total[kAssignments].item<double>(), 1.0);
  return s;
}

RoutedExperts::RoutedExperts(const MoeConfig& c, int64_t d, const parallel::TensorParallel& tp,
                             const parallel::ExpertParallel& ep, ParamStore& store,
                             const std::string& prefix, double residual_scale, Holding holding)
    : config_(c), tp_(tp), ep_(ep) {
  const int64_t experts = c.experts, f = c.expert_ffn;
  // Each expert's hidden units split over tp: gate and up by their rows (dim 1 of [E, f, d]), down
  // by its columns (dim 2 of [E, d, f]).
  const Shard expert_rows{1, tp.rank(), tp.size()}, expert_columns{2, tp.rank(), tp.size()};
  const Shard rows{0, tp.rank(), tp.size()}, columns{1, tp.rank(), tp.size()};
  const Shard mine{0, ep.rank(), ep.size()};  // this rank's experts
  router_ = store.add(prefix + "router", Role::Hidden, InitKind::Normal, {experts, d}, {1}, d, 1.0,
                      {}, holding);
  if (c.balance == Balance::Bias) {
    selection_bias_ = store.add(prefix + "router_bias", Role::Vector, InitKind::Zeros, {experts},
                                {}, 1, 1.0, {}, holding);
    store.set_rule_updated(prefix + "router_bias");
  }
  w_gate_ = store.add(prefix + "experts.w_gate", Role::Hidden, InitKind::Normal, {experts, f, d},
                      {1, 2}, d, 1.0, expert_rows, holding, mine);
  w_up_ = store.add(prefix + "experts.w_up", Role::Hidden, InitKind::Normal, {experts, f, d},
                    {1, 2}, d, 1.0, expert_rows, holding, mine);
  w_down_ = store.add(prefix + "experts.w_down", Role::Hidden, InitKind::Normal, {experts, d, f},
                      {1, 2}, f, residual_scale, expert_columns, holding, mine);
  if (c.shared_experts > 0) {
    const int64_t s = c.shared_experts * f;
    shared_gate_.weight = store.add(prefix + "shared.w_gate", Role::Hidden, InitKind::Normal,
                                    {s, d}, {0, 1}, d, 1.0, rows, holding);
    shared_up_.weight = store.add(prefix + "shared.w_up", Role::Hidden, InitKind::Normal, {s, d},
                                  {0, 1}, d, 1.0, rows, holding);
    shared_down_ = store.add(prefix + "shared.w_down", Role::Hidden, InitKind::Normal, {d, s},
                             {0, 1}, s, residual_scale, columns, holding);
    shared_gate_.tp = shared_up_.tp = tp;
  }
  counts_ = torch::zeros({experts + kRoutingExtras}, torch::kFloat64);
}

torch::Tensor RoutedExperts::forward(const torch::Tensor& normed) {
  const int64_t experts = config_.experts, k = config_.top_k;

  // Route every token of the sequence-parallel group alike on every tp rank (see the header).
  torch::Tensor logits;
  {
    const NoAutocast fp32(normed.device().type());  // the choice must not flip with bf16 rounding
    const torch::Tensor router =
        tp_.sequence_parallel ? parallel::replicated_in_partial_use(router_, tp_) : router_;
    logits = torch::matmul(normed.to(torch::kFloat32), router.t());
  }
  logits = parallel::gather_tokens_to_replicate(logits, tp_);  // [tokens, experts]
  const int64_t tokens = logits.size(0);
  const Routing routing = route(logits, config_, selection_bias_);

  // Assignments (token t, slot j) = row t x k + j, sorted by expert; stable, so token order stays
  // within each expert and a capacity keeps the earliest tokens.
  const torch::Tensor assigned = routing.experts.reshape({-1});
  const torch::Tensor order = std::get<1>(assigned.sort(std::optional<bool>(true), 0));
  const torch::Tensor load = torch::bincount(assigned, {}, experts);
  torch::Tensor kept = order, kept_load = load;
  if (config_.capacity_factor > 0) {
    const auto capacity = static_cast<int64_t>(std::ceil(
        config_.capacity_factor * static_cast<double>(tokens * k) / static_cast<double>(experts)));
    const torch::Tensor first = load.cumsum(0) - load;  // each expert's first sorted position
    const torch::Tensor position = torch::arange(tokens * k, order.options()) -
                                   first.index_select(0, assigned.index_select(0, order));
    kept = order.masked_select(position < capacity);
    kept_load = load.clamp_max(capacity);
  }
  const torch::Tensor token = kept.div(k, "floor");
  const torch::Tensor weight = routing.weights.reshape({-1}).index_select(0, kept);

  // The experts: gather the assigned tokens once, three grouped products, weighted scatter back.
  const torch::Tensor h = parallel::enter_column_region(normed, tp_);  // [tokens, d_model]
  torch::Tensor x = h.index_select(0, token);
  torch::Tensor ends = kept_load.cumsum(0);
  parallel::ExpertDispatch plan;
  if (ep_.active()) {  // to the ranks that hold the experts, grouped by this rank's experts
    plan = parallel::plan_dispatch(kept_load, experts, ep_);
    x = parallel::dispatch_rows(x, plan, ep_);
    ends = plan.local_load.cumsum(0);
  }
  const torch::Tensor hidden = kernels::swiglu(grouped_linear(x, w_gate_, ends),
                                               grouped_linear(x, w_up_, ends), fused_kernels_);
  torch::Tensor out = grouped_linear(hidden, w_down_, ends);  // partial sums over tp
  if (ep_.active()) out = parallel::combine_rows(out, plan, ep_);
  const torch::Tensor gate = tp_.active() ? parallel::copy_to_tensor_parallel(weight, tp_) : weight;
  const torch::Tensor weighted = out * gate.unsqueeze(1);
  torch::Tensor y =
      torch::zeros({tokens, weighted.size(1)}, weighted.options()).index_add(0, token, weighted);
  if (config_.shared_experts > 0)
    y = y +
        torch::matmul(kernels::swiglu(shared_gate_.local(h), shared_up_.local(h), fused_kernels_),
                      shared_down_.t());
  torch::Tensor result = parallel::exit_row_region(y, tp_);

  if (torch::GradMode::is_enabled()) {
    const torch::Tensor aux = load_balancing_loss(routing, experts);
    const torch::Tensor z = torch::logsumexp(logits, -1).square().mean();
    if (config_.aux_loss > 0 || config_.router_z_loss > 0)
      result = AttachAuxiliaryLoss::apply(
          result, aux * config_.aux_loss + z * config_.router_z_loss, objective_scale_);
    torch::NoGradGuard no_grad;
    counts_.narrow(0, 0, experts) += load.to(torch::kCPU, torch::kFloat64);
    const double assignments = static_cast<double>(tokens * k);
    counts_[experts + kDropped] += assignments - static_cast<double>(kept.numel());
    counts_[experts + kAssignments] += assignments;
    counts_[experts + kAuxLoss] += aux.item<double>();
    counts_[experts + kZLoss] += z.item<double>();
    counts_[experts + kForwards] += 1.0;
  }
  return result;
}

torch::Tensor RoutedExperts::take_counts() {
  torch::Tensor out = counts_.clone();
  counts_.zero_();
  return out;
}

void RoutedExperts::balance(const torch::Tensor& load) {
  if (!selection_bias_.defined()) return;
  torch::NoGradGuard no_grad;
  const torch::Tensor below_mean = (load.mean() - load).sign().to(torch::kFloat32);
  selection_bias_.add_(below_mean.to(selection_bias_.device()), config_.bias_update_rate);
}

}  // namespace ladder::models
