// The architecture registry: the one place that maps model.arch to a class.
#include <stdexcept>

#include "models/dense.h"
#include "models/model.h"

namespace ladder::models {

std::unique_ptr<Model> build_model(const ModelConfig& config, int64_t vocab_size,
                                   int64_t max_seq_len, const parallel::TensorParallel& tp,
                                   const StageLayout& stage, const parallel::ExpertParallel& ep,
                                   bool fused_kernels) {
  // A mixture of experts is the dense model with routed MLPs (models/moe.h), a hybrid the dense
  // model with Mamba-2 layers (models/mamba.h), ParScale the dense model with P streams.
  switch (config.arch) {
    case Arch::Dense:
    case Arch::Moe:
    case Arch::Hybrid:
    case Arch::Parscale:
      return std::make_unique<DenseTransformer>(config, vocab_size, max_seq_len, tp, stage, ep,
                                                fused_kernels);
  }
  throw std::logic_error("build_model: an architecture without a class");
}

StageCosts stage_costs(const ModelConfig& config, int64_t vocab_size, int64_t seq_len,
                       parallel::StageBalance by) {
  switch (config.arch) {
    case Arch::Dense:
    case Arch::Moe:
    case Arch::Hybrid:
    case Arch::Parscale:
      return DenseTransformer::stage_costs(config, vocab_size, seq_len, by);
  }
  throw std::logic_error("stage_costs: an architecture without a class");
}

SizeAccounting size_accounting(const ModelConfig& config, int64_t vocab_size, int64_t seq_len) {
  StageLayout nothing_held;
  nothing_held.chunks = {{0, 0}};
  nothing_held.first = nothing_held.last = false;
  return build_model(config, vocab_size, seq_len, {}, nothing_held)->accounting(seq_len);
}

}  // namespace ladder::models
