#include "trainer/cadence.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <vector>

#include "trainer/checkpoint.h"

namespace ladder {

Cadence::Cadence(const Recipe& r)
    : steps_(r.train.steps),
      log_every_(r.train.log_every),
      eval_every_(r.eval.every_steps),
      spectra_every_(r.eval.spectra_every_steps),
      checkpoint_every_(r.checkpoint.every_steps),
      keep_(r.checkpoint.keep),
      tokens_per_step_(r.parallel.islands * r.train.global_batch * r.data.seq_len),
      checkpoint_config_(r.checkpoint) {}

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
  const auto& c = checkpoint_config_;
  const auto& rule = c.intermediate;
  if (rule.rule == "none") return false;
  if (rule.rule == "log2") return done > 0 && (done & (done - 1)) == 0;
  for (int64_t point : rule.points) {
    if (c.intermediate_unit == "steps" && point == done) return true;
    // A token count is reached by the first step whose tokens cover it.
    if (c.intermediate_unit == "tokens" && (done - 1) * tokens_per_step_ < point &&
        point <= done * tokens_per_step_)
      return true;
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
