// When a run does what, after `done` completed steps: log a line (and a trace row), evaluate,
// record the spectra, write a checkpoint (periodic, intermediate for law fitting, the last), and
// which periodic checkpoints to remove. One object, built from the recipe, so the loop asks it
// instead of comparing counters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/recipe/recipe.h"

namespace ladder {

class Cadence {
 public:
  explicit Cadence(const Recipe& recipe);

  bool log(int64_t done) const;
  bool eval(int64_t done) const;
  bool spectra(int64_t done) const;
  // Kept for law fitting (checkpoint.intermediate): powers of two, or the listed steps, or the
  // first step whose tokens cover a listed token count.
  bool intermediate(int64_t done) const;
  // Any checkpoint: intermediate, periodic, the last step, or `stopping` (a preemption signal).
  bool checkpoint(int64_t done, bool stopping) const;
  // Keeps the newest checkpoint.keep periodic checkpoints of `run_dir`; intermediate ones stay.
  void prune_periodic(const std::string& run_dir) const;

 private:
  // checkpoint.intermediate, decided once from the recipe's text.
  enum class Intermediate { None, PowersOfTwo, Steps, Tokens };
  int64_t steps_, log_every_, eval_every_, spectra_every_, checkpoint_every_, keep_;
  int64_t tokens_per_step_;
  Intermediate intermediate_;
  std::vector<int64_t> points_;  // the listed steps or token counts
};

}  // namespace ladder
