// The model section of a recipe (recipes/README.md documents each key; trainer/recipe/recipe.cpp
// validates).
#pragma once

#include <cstdint>
#include <string>

#include "core/choice.h"

namespace ladder::models {

// The factors of a parametrization that act inside the forward pass (optim::scale_factors derives
// them from the recipe's [mup] section; the defaults are the standard parametrization). Models
// apply them and never choose them (DESIGN.md contract 1).
struct ScaleFactors {
  double attention_scale = 0;       // softmax(q.k x this); 0: 1 / sqrt(d_head)
  double residual_branch = 1;       // x + this x branch(x), for attention and MLP branches
  double logits = 1;                // the readout's output x this
  int64_t residual_init_depth = 0;  // output projections start at std / sqrt(2 x this); 0: n_layers
};

// moe.gate: router scores by a softmax over the experts, or a sigmoid per expert (DeepSeek-V3).
enum class Gate { Softmax, Sigmoid };
inline constexpr Choice<Gate> kGateNames[] = {{Gate::Softmax, "softmax"},
                                              {Gate::Sigmoid, "sigmoid"}};
// moe.balance: the auxiliary loss alone, or DeepSeek-V3's auxiliary-loss-free expert bias.
enum class Balance { Aux, Bias };
inline constexpr Choice<Balance> kBalanceNames[] = {{Balance::Aux, "aux"}, {Balance::Bias, "bias"}};

// The routed MLP of model.arch = "moe" (recipes/README.md, [moe]; models/moe.h).
struct MoeConfig {
  int64_t experts = 0;         // routed experts per MoE layer
  int64_t top_k = 0;           // experts each token is sent to
  int64_t shared_experts = 0;  // experts every token goes through (DeepSeekMoE)
  int64_t expert_ffn = 0;      // resolved: 0 in the file means ffn_hidden / granularity
  double granularity = 0;      // resolved: ffn_hidden / expert_ffn (Krajewski et al. 2024)
  int64_t moe_every = 0;       // layer l (from 0) is routed when (l + 1) % moe_every == 0
  double capacity_factor = 0;  // 0: dropless
  double aux_loss = 0;         // Switch / GShard load-balancing loss weight
  double router_z_loss = 0;    // ST-MoE router z-loss weight
  Gate gate = Gate::Softmax;
  Balance balance = Balance::Aux;
  double bias_update_rate = 0;  // u of the bias rule
};

// The layer pattern and the Mamba-2 sizes of model.arch = "hybrid" (recipes/README.md, [hybrid];
// models/mamba.h).
struct HybridConfig {
  std::string pattern;       // per-layer letters repeated over the depth: M Mamba-2, A attention
  int64_t ssm_state = 0;     // N: the state size per head
  int64_t ssm_head_dim = 0;  // P: channels per SSM head
  int64_t conv_kernel = 0;   // the causal depthwise convolution's width
  int64_t chunk = 0;         // Q: the SSD algorithm's chunk length
  int64_t expand = 0;        // d_inner = expand x d_model
  int64_t window = 0;        // sliding-window attention in the A layers; 0: full causal
};

// Parallel streams of model.arch = "parscale" (Chen et al. 2025; recipes/README.md, [parscale]).
struct ParscaleConfig {
  int64_t streams = 1;               // P: copies of the input, each with its own prefixes
  int64_t prefix_tokens = 0;         // learnable key/value prefix per stream and attention layer
  double aggregation_smoothing = 0;  // epsilon: weights (1 - eps) softmax + eps / P
};

// model.arch. Every architecture is the dense transformer with other blocks or inputs
// (models/registry.cpp): routed MLPs, Mamba-2 layers, parallel streams.
enum class Arch { Dense, Moe, Hybrid, Parscale };
inline constexpr Choice<Arch> kArchNames[] = {{Arch::Dense, "dense"},
                                              {Arch::Moe, "moe"},
                                              {Arch::Hybrid, "hybrid"},
                                              {Arch::Parscale, "parscale"}};

struct ModelConfig {
  Arch arch = Arch::Dense;
  int64_t d_model = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;  // resolved: 0 in the file means n_heads
  int64_t ffn_hidden = 0;  // 0: round_up(ffn_multiplier * d_model, ffn_multiple_of)
  double ffn_multiplier = 0;
  int64_t ffn_multiple_of = 0;
  double norm_eps = 0;
  double rope_theta = 0;
  bool qk_norm = false;
  bool tie_embeddings = false;
  double z_loss = 0;
  // The [moe], [hybrid] and [parscale] sections, as the recipe gives them (their one home). A
  // section is read only when arch names it: ask the queries below what the model has.
  MoeConfig moe;
  HybridConfig hybrid;
  ParscaleConfig parscale;
  ScaleFactors scales;  // not a [model] key: set from [mup]

  // Whether layer l (from 0) has a routed MLP: (l + 1) % moe.moe_every == 0 in a "moe" model.
  bool routed(int64_t layer) const {
    return arch == Arch::Moe && moe.experts > 0 && (layer + 1) % moe.moe_every == 0;
  }
  // Whether layer l is a Mamba-2 layer: its letter of hybrid.pattern is M in a "hybrid" model.
  bool mamba(int64_t layer) const {
    const std::string& p = hybrid.pattern;
    return arch == Arch::Hybrid && !p.empty() && p[static_cast<size_t>(layer) % p.size()] == 'M';
  }
  int64_t experts() const { return arch == Arch::Moe ? moe.experts : 0; }
  int64_t streams() const { return arch == Arch::Parscale ? parscale.streams : 1; }
  int64_t prefix_tokens() const { return arch == Arch::Parscale ? parscale.prefix_tokens : 0; }
  int64_t attention_window() const { return arch == Arch::Hybrid ? hybrid.window : 0; }
};

}  // namespace ladder::models
