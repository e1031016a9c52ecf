// The model section of a recipe (recipes/README.md documents each key; trainer/recipe.cpp
// validates).
#pragma once

#include <cstdint>
#include <string>

namespace ladder::models {

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
};

}  // namespace ladder::models
