// The routed MLP of a mixture-of-experts layer (model.arch = "moe"): a router sends each token to
// top_k of `experts` SwiGLU experts, whose outputs are summed with the router's weights; optional
// shared experts see every token (DeepSeekMoE, Dai et al. 2024).
//
// Routing (Shazeer et al. 2017; Switch, Fedus et al. 2021; GShard, Lepikhin et al. 2020): router
// logits x W_r^T in fp32, scores by softmax or sigmoid, the top_k experts of each token,
// their scores renormalised to sum to one when top_k > 1 (with top_k = 1 the raw score is kept, so
// the router still learns from the loss, as in Switch). Dropless by default: every assignment is
// computed. With a capacity factor c, each expert takes at most ceil(c x tokens x top_k / experts)
// assignments in token order; the rest are dropped (the token keeps only its residual path for
// that slot) and counted.
//
// Compute: the assignments are sorted by expert, gathered once, and each of the three expert
// matrices is one grouped matrix product over the sorted rows (at::_grouped_mm); the outputs are
// weighted and scattered back with one index_add. Expert weights are logical [experts, out, in]
// tensors.
//
// Balancing: the Switch/GShard auxiliary loss E x sum_i f_i P_i (f_i the fraction of assignments
// to expert i, P_i its mean router probability; 1 when balanced) and the ST-MoE router z-loss
// (Zoph et al. 2022, mean squared log-sum-exp of the router logits), both added to the objective;
// or, with balance = "bias", DeepSeek-V3's auxiliary-loss-free rule (Liu et al. 2024, section
// 2.1.2): a per-expert bias added to the scores for the choice of experts only (never to the
// weights), raised by u for experts below the mean load and lowered by u above it after each step.
//
// Expert parallelism (parallel/expert_parallel.h): this rank holds experts/ep of the experts; the
// sorted rows go to the ranks that hold their experts and come back before the weighting.
//
// Tensor parallelism: each expert's hidden dimension is split over tp like the dense MLP's (gate
// and up by rows, down by columns); every tp rank routes all tokens the same way. The router reads
// the replicated input (with sequence parallelism: its token block, logits all-gathered), so its
// gradient is never summed twice; the routing weights enter the partial expert outputs through f,
// which sums their gradient over the group.
#pragma once

#include <string>

#include <torch/torch.h>

#include "models/config.h"
#include "models/params.h"
#include "parallel/expert_parallel.h"
#include "parallel/tensor_parallel.h"

namespace ladder::models {

// rows [ends[g-1], ends[g]) of x times w[g]^T, for w [groups, out, in] and ends (int64, on the
// host) the cumulative row counts of the groups: one grouped product (at::_grouped_mm) where the
// dtype and alignment allow, else a product per group (fp64 in tests, sizes not a multiple of 16
// bytes).
torch::Tensor grouped_linear(const torch::Tensor& x, const torch::Tensor& w,
                             const torch::Tensor& ends);

// The experts each token goes to and their weights.
struct Routing {
  torch::Tensor experts;  // [tokens, top_k] int64
  torch::Tensor weights;  // [tokens, top_k], differentiable with respect to the logits
  torch::Tensor probs;    // [tokens, experts]: the scores normalised to sum to one per token
};

// Routes tokens by their router logits [tokens, experts] (fp32). `selection_bias` [experts]
// (balance = "bias") shifts the choice of experts, not the weights.
Routing route(const torch::Tensor& logits, const MoeConfig& config,
              const torch::Tensor& selection_bias = {});

// Switch's load-balancing loss E x sum_i f_i P_i: f from the (non-differentiable) choices, P the
// mean of `probs` over tokens.
torch::Tensor load_balancing_loss(const Routing& routing, int64_t experts);

// Columns of a routed layer's counters (RoutedExperts::take_counts): the assignments each expert
// received (before drops), then these.
enum RoutingColumn : int64_t {
  kDropped = 0,      // assignments over capacity
  kAssignments = 1,  // tokens x top_k
  kAuxLoss = 2,      // sum over forwards of the load-balancing loss
  kZLoss = 3,        // sum over forwards of the router z-loss
  kForwards = 4,
  kRoutingExtras = 5
};

// What the counters of every routed layer ([layers, experts + kRoutingExtras], summed over ranks
// and steps) say, averaged over layers.
struct RoutingSummary {
  double aux_loss = 0, z_loss = 0;  // mean per forward
  double load_max_over_mean = 0;    // the busiest expert's assignments / the mean
  double load_cv = 0;               // coefficient of variation of the load over experts
  double dropped_fraction = 0;      // assignments over capacity / all assignments
};
RoutingSummary summarize_routing(const torch::Tensor& counts);
// The interval's log line of the routed layers: "experts step N | aux loss ... | dropped ...%".
std::string describe_routing(int64_t step, const RoutingSummary& summary);

class RoutedExperts {
 public:
  // Registers the layer's parameters under `prefix` (e.g. "layers.3.moe.") in `store`.
  // `residual_scale` multiplies the init of the output projections (as the dense MLP's w_down).
  RoutedExperts(const MoeConfig& config, int64_t d_model, const parallel::TensorParallel& tp,
                const parallel::ExpertParallel& ep, ParamStore& store, const std::string& prefix,
                double residual_scale, Holding holding);

  // normed [tokens, d_model] (with sequence parallelism this rank's block of the tokens) -> the
  // branch output in the same layout, reduced over tp. In grad mode the routing is counted and the
  // auxiliary losses enter the backward pass with weight x objective_scale.
  torch::Tensor forward(const torch::Tensor& normed);

  // The counters since the last call ([experts + kRoutingExtras], fp64), then zero.
  torch::Tensor take_counts();
  // DeepSeek-V3's bias rule from the step's loads [experts] (summed over every rank that routes
  // different tokens, so every rank applies the same update).
  void balance(const torch::Tensor& load);
  // The factor the trainer applies to each micro-batch's objective; the auxiliary losses, which
  // reach the backward pass through the activations, take it too.
  void set_objective_scale(double scale) { objective_scale_ = scale; }
  // The experts' SwiGLU through kernels::swiglu's fused kernel (ModelConfig::fused_kernels).
  void set_fused_kernels(bool fused) { fused_kernels_ = fused; }

 private:
  MoeConfig config_;
  parallel::TensorParallel tp_;
  parallel::ExpertParallel ep_;
  torch::Tensor router_, selection_bias_, w_gate_, w_up_, w_down_;
  // The shared experts as one SwiGLU of hidden shared_experts x expert_ffn (the same function as
  // their sum); its down projection's partial output joins the routed one before the tp reduce.
  parallel::ColumnParallelLinear shared_gate_, shared_up_;
  torch::Tensor shared_down_;
  torch::Tensor counts_;
  double objective_scale_ = 1;
  bool fused_kernels_ = false;
};

}  // namespace ladder::models
