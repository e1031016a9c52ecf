#include "models/describe.h"

#include <spdlog/spdlog.h>

#include "core/format.h"

namespace ladder::models {

std::vector<std::string> describe_model(const ModelConfig& c, const SizeAccounting& acc,
                                        int64_t vocab) {
  std::vector<std::string> lines;
  lines.push_back(fmt::format(
      "model: {} d_model={} layers={} heads={}/{} ffn={} vocab={}: {} parameters, N={}, "
      "{} FLOPs/token",
      choice_name(kArchNames, c.arch), c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_hidden,
      vocab, human_count(acc.total_params), human_count(acc.non_embedding_params),
      human_count(acc.flops_per_token)));
  if (c.experts() > 0) {
    const auto& e = c.moe;
    int64_t routed = 0;
    for (int64_t l = 0; l < c.n_layers; ++l)
      routed += c.routed(l) ? 1 : 0;
    lines.push_back(fmt::format(
        "mixture of experts: {} of {} layers routed to {} experts (top-{}, {} shared) of hidden {} "
        "(granularity {}), {} gate, {}, balance by {}: {} of {} parameters active per token",
        routed, c.n_layers, e.experts, e.top_k, e.shared_experts, e.expert_ffn,
        shortest_float(e.granularity), choice_name(kGateNames, e.gate),
        e.capacity_factor > 0 ? "capacity factor " + shortest_float(e.capacity_factor)
                              : std::string("dropless"),
        choice_name(kBalanceNames, e.balance), human_count(acc.active_params),
        human_count(acc.total_params)));
  }
  if (c.arch == Arch::Parscale) {
    const auto& ps = c.parscale;
    lines.push_back(fmt::format(
        "parscale: {} stream{} through the shared backbone, {}-token key/value prefix per stream "
        "and attention layer{}",
        ps.streams, ps.streams == 1 ? "" : "s", ps.prefix_tokens,
        ps.streams > 1
            ? fmt::format(", aggregation smoothing {}", shortest_float(ps.aggregation_smoothing))
            : std::string()));
  }
  return lines;
}

Attributes model_attributes(const ModelConfig& c, const SizeAccounting& acc, int64_t vocab) {
  // The sections of the other architectures are traced at their off values.
  const ParscaleConfig ps = c.arch == Arch::Parscale ? c.parscale : ParscaleConfig{};
  const MoeConfig moe = c.arch == Arch::Moe ? c.moe : MoeConfig{};
  const HybridConfig hy = c.arch == Arch::Hybrid ? c.hybrid : HybridConfig{};
  return {
      {"arch", std::string(choice_name(kArchNames, c.arch))},
      {"N", acc.non_embedding_params},
      {"total_params", acc.total_params},
      {"active_params", acc.active_params},
      {"embedding_params", acc.embedding_params},
      {"active_N", acc.active_non_embedding_params},
      {"flops_per_token", acc.flops_per_token},
      {"width", acc.width},
      {"depth", acc.depth},
      {"n_heads", c.n_heads},
      {"vocab_size", vocab},
      // ParScale (one stream otherwise); P is the name the ParScale law reads.
      {"streams", ps.streams},
      {"P", ps.streams},
      {"prefix_tokens", ps.prefix_tokens},
      {"aggregation_smoothing", ps.aggregation_smoothing},
      // Mixture of experts (no experts otherwise).
      {"experts", moe.experts},
      {"top_k", moe.top_k},
      {"granularity", moe.granularity},
      {"shared_experts", moe.shared_experts},
      {"expert_ffn", moe.expert_ffn},
      // Hybrid (pattern "" otherwise).
      {"pattern", hy.pattern},
      {"ssm_state", hy.ssm_state},
      {"ssm_head_dim", hy.ssm_head_dim},
      {"ssm_chunk", hy.chunk},
      {"ssm_expand", hy.expand},
      {"conv_kernel", hy.conv_kernel},
      {"attention_window", hy.window},
  };
}

}  // namespace ladder::models
