// The model section of a recipe (recipes/README.md documents each key; trainer/recipe.cpp
// validates).
#pragma once

#include <cstdint>
#include <string>

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

struct ModelConfig {
  std::string arch;
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
  ScaleFactors scales;  // not a [model] key: set from [mup]
};

}  // namespace ladder::models
