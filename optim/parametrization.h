// From parameter roles to initial values, per-parameter optimiser settings and the factors that act
// inside the model (DESIGN.md contract 1). docs/parametrization.md gives every formula with its
// source; in short, with width multiplier m = d_model / base_width and depth multiplier
// m_L = n_layers / base_depth:
//
//   role       init std                        lr            AdamW eps       weight decay
//   embedding  1                               eta           eps             lambda
//   hidden     1/sqrt(fan_in) (= sigma/sqrt m) eta/m* x D    eps/m* x E      rule(lambda)
//   readout    1/sqrt(fan_in)  | muP: sqrt(m)/sqrt(fan_in) = sigma, or 0     lambda
//   vector     1 or 0                          eta           eps             0
//
// (* muP only.) Depth (CompleteP, Dey et al. 2025), with alpha = mup.depth_alpha: residual
// branches x m_L^-alpha, hidden lr D = m_L^(alpha - 1), hidden eps E = m_L^-alpha (alpha = 0: no
// depth scaling). The hidden weight-decay rule: constant lambda, width_power lambda m^e, or
// timescale lambda = B / (eta_p tau D) (Power Lines). Logits x alpha_out (SP) or alpha_out / m
// (muP); attention scores x alpha_attn / sqrt(d_head) (SP) or alpha_attn / d_head (muP).
//
// SP is PyTorch's fan-in standard parametrization: a hidden matrix's std already falls as 1/sqrt(m)
// with width, so muP differs from it in the readout (constant std, output x 1/m), the hidden
// learning rate and eps, and the attention scale. Vectors take no weight decay in either.
//
// Initialisation is layout-independent (contract 3): each parameter is drawn at its full logical
// shape from a generator seeded by hash(run.seed, parameter name), so it never depends on which
// other parameters exist, their order, or how the tensor is later sharded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/attributes.h"
#include "models/config.h"
#include "models/params.h"
#include "optim/config.h"

namespace ladder::optim {

// The rules in force for one parameter.
struct ParamSettings {
  double init_std = 0;  // Normal parameters: drawn from N(0, init_std^2); 0: zeros
  double lr_multiplier = 1.0;
  double weight_decay = 0.0;
  double eps = 0.0;  // AdamW epsilon
};

// Everything the rules read besides the parameters themselves.
struct RuleInputs {
  MupConfig mup;
  OptimConfig optim;            // lambda (weight_decay), eps and the peak lr eta
  double width_multiplier = 1;  // m = d_model / base_width
  double depth_multiplier = 1;  // m_L = n_layers / base_depth (1 without depth scaling)
  double tokens_per_step = 0;   // B of the timescale rule
  double total_tokens = 0;      // D of the timescale rule
};

RuleInputs rule_inputs(const MupConfig& mup, const OptimConfig& optim,
                       const models::ModelConfig& model, int64_t tokens_per_step,
                       int64_t total_tokens);

// One entry per parameter of `params` (a store's all() or catalog()), in order.
std::vector<ParamSettings> param_settings(const std::vector<models::Param>& params,
                                          const RuleInputs& inputs);

// Draws every parameter's initial value; `settings` as param_settings(store.all(), ...).
void initialize(models::ParamStore& store, const std::vector<ParamSettings>& settings,
                uint64_t seed);

// The rules in force as a table, one line per parameter: name, role, shape, base shape (width
// dimensions divided by m), init std, lr multiplier, weight decay, eps; tab-separated, with a
// header line. Saved in traces and checkpoints (the same text for the same rules).
std::string rules_table(const std::vector<models::Param>& params,
                        const std::vector<ParamSettings>& settings, double width_multiplier);

// The parametrization's trace attributes: lr, weight_decay, the [mup] keys, the width and depth
// multipliers and the rules table (rules_table).
Attributes parametrization_attributes(const RuleInputs& inputs, const std::string& rules);

}  // namespace ladder::optim
