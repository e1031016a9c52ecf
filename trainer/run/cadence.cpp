#include "trainer/run/cadence.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "trainer/run/checkpoint.h"

namespace ladder {

Cadence::Cadence(const Recipe& r)
    : steps_(r.train.steps),
      log_every_(r.train.log_every),
      eval_every_(r.eval.every_steps),
      spectra_every_(r.eval.spectra_every_steps),
      checkpoint_every_(r.checkpoint.every_steps),
      keep_(r.checkpoint.keep),
      tokens_per_step_(r.parallel.islands * r.train.global_batch * r.data.seq_len),
      intermediate_(r.checkpoint.intermediate.rule == IntermediateRule::None ? Intermediate::None
                    : r.checkpoint.intermediate.rule == IntermediateRule::Log2
                        ? Intermediate::PowersOfTwo
                    : r.checkpoint.intermediate_unit == PointUnit::Tokens ? Intermediate::Tokens
                                                                          : Intermediate::Steps),
      points_(r.checkpoint.intermediate.points) {}

bool Cadence::log(int64_t done) const {
  return done % log_every_ == 0 || done == steps_;
}

bool Cadence::eval(int64_t done) const {
  return eval_every_ > 0 && (done % eval_every_ == 0 || done == steps_);
}

bool Cadence::spectra(int64_t done) const {
  return spectra_every_ > 0 && (done % spectra_every_ == 0 || done == steps_);
}

bool Cadence::intermediate(int64_t done) const {
  switch (intermediate_) {
    case Intermediate::None:
      return false;
    case Intermediate::PowersOfTwo:
      return done > 0 && (done & (done - 1)) == 0;
    case Intermediate::Steps:
      return std::find(points_.begin(), points_.end(), done) != points_.end();
    case Intermediate::Tokens:
      // A token count is reached by the first step whose tokens cover it.
      for (int64_t point : points_)
        if ((done - 1) * tokens_per_step_ < point && point <= done * tokens_per_step_) return true;
      return false;
  }
  return false;
}

bool Cadence::checkpoint(int64_t done, bool stopping) const {
  const bool periodic = checkpoint_every_ > 0 && done % checkpoint_every_ == 0;
  return intermediate(done) || periodic || stopping || done == steps_;
}

void Cadence::prune_periodic(const std::string& run_dir) const {
  std::vector<int64_t> periodic;
  for (int64_t s : checkpoint_steps(run_dir))
    if (!intermediate(s)) periodic.push_back(s);
  for (size_t i = 0; i + static_cast<size_t>(keep_) < periodic.size(); ++i) {
    std::filesystem::remove(checkpoint_path(run_dir, periodic[i]));
    spdlog::debug("removed periodic checkpoint at step {}", periodic[i]);
  }
}

}  // namespace ladder
