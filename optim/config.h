// The optimisation sections of a recipe: [optim], [schedule], [mup] (recipes/README.md documents
// each key; trainer/recipe/recipe.cpp validates).
#pragma once

#include <cstdint>
#include <string>

#include "core/choice.h"
#include "models/config.h"

namespace ladder::optim {

struct OptimConfig {
  double lr = 0, weight_decay = 0, beta1 = 0, beta2 = 0, eps = 0, grad_clip = 0;
  int64_t zero = 0;
};

// schedule.kind and schedule.decay_shape (optim/schedule.h).
enum class LrSchedule { Constant, Cosine, Wsd };
inline constexpr Choice<LrSchedule> kLrScheduleNames[] = {
    {LrSchedule::Constant, "constant"}, {LrSchedule::Cosine, "cosine"}, {LrSchedule::Wsd, "wsd"}};
enum class DecayShape { Linear, OneMinusSqrt };
inline constexpr Choice<DecayShape> kDecayShapeNames[] = {{DecayShape::Linear, "linear"},
                                                          {DecayShape::OneMinusSqrt, "1-sqrt"}};

struct ScheduleConfig {
  LrSchedule kind = LrSchedule::Cosine;
  int64_t warmup = 0;
  int64_t warmup_tokens = 0;  // the warm-up as tokens (0: `warmup` steps), resolved into `warmup`
  double final_lr_fraction = 0;
  double decay_fraction = 0;
  DecayShape decay_shape = DecayShape::Linear;
};

// The parametrization: how initial values, learning rates, AdamW eps and weight decay follow width
// and depth (optim/parametrization.h has the rules; docs/parametrization.md the formulas). The
// defaults here are the identity (SP at the base shape), for code that builds models without a
// recipe; a recipe's defaults are in trainer/recipe/recipe.cpp.
// mup.parametrization: standard, or maximal-update (Yang et al. 2022).
enum class Parametrization { Sp, Mup };
inline constexpr Choice<Parametrization> kParametrizationNames[] = {{Parametrization::Sp, "sp"},
                                                                    {Parametrization::Mup, "mup"}};
// mup.wd_rule: the weight decay of hidden matrices across widths.
enum class WdRule { Constant, WidthPower, Timescale };
inline constexpr Choice<WdRule> kWdRuleNames[] = {{WdRule::Constant, "constant"},
                                                  {WdRule::WidthPower, "width_power"},
                                                  {WdRule::Timescale, "timescale"}};

struct MupConfig {
  Parametrization parametrization = Parametrization::Sp;
  int64_t base_width = 256;           // m = d_model / base_width
  int64_t base_depth = 0;             // m_L = n_layers / base_depth; 0: no depth scaling
  double depth_alpha = 0;             // residual branches x m_L^-alpha (0, 0.5 or 1)
  double output_multiplier = 1;       // alpha_out: logits x alpha_out (SP) or alpha_out / m (muP)
  double attention_multiplier = 1;    // scores x this / sqrt(d_head) (SP) or / d_head (muP)
  bool readout_zero_init = false;     // muP: start the readout at zero
  WdRule wd_rule = WdRule::Constant;  // hidden matrices
  double wd_width_exponent = 1;       // width_power: lambda x m^e
  double wd_timescale = 0;            // timescale: tau = B / (eta lambda D), fraction of training
};

// The factors of the parametrization that act inside the model's forward pass (attention scale,
// residual branch and output multipliers). Declared here, free of LibTorch, for the recipe loader;
// defined with the other rules in optim/parametrization.cpp.
models::ScaleFactors scale_factors(const MupConfig& mup, const models::ModelConfig& model);

}  // namespace ladder::optim
