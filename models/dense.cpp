#include "models/dense.h"

#include <ATen/autocast_mode.h>

#include <cmath>

#include "core/error.h"
#include "core/op_profile.h"
#include "kernels/cross_entropy.h"
#include "kernels/rms_norm.h"
#include "kernels/swiglu.h"

namespace ladder::models {

DenseTransformer::DenseTransformer(const ModelConfig& c, int64_t vocab_size, int64_t max_seq_len,
                                   const parallel::TensorParallel& tp, const StageLayout& stage,
                                   const parallel::ExpertParallel& ep, bool fused_kernels)
    : config_(c),
      fused_kernels_(fused_kernels),
      vocab_size_(vocab_size),
      head_dim_(c.d_model / c.n_heads),
      tp_(tp),
      stage_(stage),
      local_heads_(c.n_heads / tp.size()),
      local_kv_heads_(c.n_kv_heads / tp.size()),
      streams_(c.streams()),
      rope_(c.d_model / c.n_heads, max_seq_len, c.rope_theta) {
  const int64_t d = c.d_model, f = c.ffn_hidden, kv = c.n_kv_heads * head_dim_;
  // Blocks of the logical weights this rank holds: by output rows (column-parallel), by input
  // columns (row-parallel), by vocabulary rows (padded to a multiple of tp).
  const models::Shard rows{0, tp.rank(), tp.size()}, columns{1, tp.rank(), tp.size()},
      vocab_rows{0, tp.rank(), tp.size(), /*pad=*/true};
  // Output projections into the residual stream start smaller by 1/sqrt(2 L), as in GPT-2
  // (Radford et al. 2019), so the residual's variance does not grow with depth at init. Under a
  // depth parametrization L is the base depth: the branch multiplier does the rest.
  const int64_t init_depth =
      c.scales.residual_init_depth > 0 ? c.scales.residual_init_depth : c.n_layers;
  const double residual_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(init_depth));
  // Pipeline stages: every parameter is described on every rank (checkpoints and the size
  // accounting see the whole model) but held only by the stage that uses it. The last stage keeps a
  // copy of a tied embedding as its readout.
  if (stage_.chunks.empty()) stage_.chunks = {{0, c.n_layers}};
  std::vector<bool> held(c.n_layers, false);
  for (const auto& [begin, end] : stage_.chunks)
    for (int64_t l = begin; l < end; ++l)
      held[l] = true;
  auto holding = [](bool here) { return here ? Holding::Held : Holding::Elsewhere; };
  const Holding embedding_holding = stage_.first                      ? Holding::Held
                                    : stage_.last && c.tie_embeddings ? Holding::TiedCopy
                                                                      : Holding::Elsewhere;
  // A tied matrix is also the readout: start it at readout scale (1/sqrt(d)) rather than embedding
  // scale.
  embedding_.weight =
      store_.add("embedding", Role::Embedding, InitKind::Normal, {vocab_size, d}, {1}, /*fan_in=*/1,
                 c.tie_embeddings ? 1.0 / std::sqrt(static_cast<double>(d)) : 1.0, vocab_rows,
                 embedding_holding);
  blocks_.resize(c.n_layers);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    const Holding h = holding(held[l]);
    Block& b = blocks_[l];
    if (c.mamba(l)) {
      b.mamba_norm =
          store_.add(p + "mamba_norm", Role::Vector, InitKind::Ones, {d}, {0}, 1, 1.0, {}, h);
      b.mamba = std::make_unique<Mamba2Mixer>(c, tp, store_, p + "mamba.", residual_scale, h);
      continue;
    }
    b.attn_norm =
        store_.add(p + "attn_norm", Role::Vector, InitKind::Ones, {d}, {0}, 1, 1.0, {}, h);
    b.wq.weight =
        store_.add(p + "attn.wq", Role::Hidden, InitKind::Normal, {d, d}, {0, 1}, d, 1.0, rows, h);
    b.wk.weight =
        store_.add(p + "attn.wk", Role::Hidden, InitKind::Normal, {kv, d}, {0, 1}, d, 1.0, rows, h);
    b.wv.weight =
        store_.add(p + "attn.wv", Role::Hidden, InitKind::Normal, {kv, d}, {0, 1}, d, 1.0, rows, h);
    if (c.qk_norm) {
      b.q_norm = store_.add(p + "attn.q_norm", Role::Vector, InitKind::Ones, {head_dim_}, {}, 1,
                            1.0, {}, h);
      b.k_norm = store_.add(p + "attn.k_norm", Role::Vector, InitKind::Ones, {head_dim_}, {}, 1,
                            1.0, {}, h);
    }
    b.wo.weight = store_.add(p + "attn.wo", Role::Hidden, InitKind::Normal, {d, d}, {0, 1}, d,
                             residual_scale, columns, h);
    if (c.prefix_tokens() > 0) {
      // Each stream's prefix keys and values (after rotary: they are learned as they are used),
      // split over tp with the key/value heads. Vectors: fan-in 1, like embeddings' rows.
      const std::vector<int64_t> shape = {c.streams(), c.prefix_tokens(), kv};
      const Shard kv_columns{2, tp.rank(), tp.size()};
      b.prefix_k = store_.add(p + "attn.prefix_k", Role::Vector, InitKind::Normal, shape, {2}, 1,
                              1.0, kv_columns, h);
      b.prefix_v = store_.add(p + "attn.prefix_v", Role::Vector, InitKind::Normal, shape, {2}, 1,
                              1.0, kv_columns, h);
    }
    b.mlp_norm = store_.add(p + "mlp_norm", Role::Vector, InitKind::Ones, {d}, {0}, 1, 1.0, {}, h);
    for (auto* layer : {&b.wq, &b.wk, &b.wv, &b.w_gate, &b.w_up})
      layer->tp = tp;
    b.wo.tp = b.w_down.tp = tp;
    if (c.routed(l)) {
      b.moe =
          std::make_unique<RoutedExperts>(c.moe, d, tp, ep, store_, p + "moe.", residual_scale, h);
      b.moe->set_fused_kernels(fused_kernels);
      continue;
    }
    b.w_gate.weight = store_.add(p + "mlp.w_gate", Role::Hidden, InitKind::Normal, {f, d}, {0, 1},
                                 d, 1.0, rows, h);
    b.w_up.weight =
        store_.add(p + "mlp.w_up", Role::Hidden, InitKind::Normal, {f, d}, {0, 1}, d, 1.0, rows, h);
    b.w_down.weight = store_.add(p + "mlp.w_down", Role::Hidden, InitKind::Normal, {d, f}, {0, 1},
                                 f, residual_scale, columns, h);
  }
  final_norm_ = store_.add("final_norm", Role::Vector, InitKind::Ones, {d}, {0}, 1, 1.0, {},
                           holding(stage_.last));
  if (streams_ > 1) {
    // The aggregation MLP of the reference code: Linear(P d -> d), SiLU, Linear(d -> P); replicated
    // on every tp rank (it acts on whole hidden states).
    const int64_t P = streams_;
    const Holding last = holding(stage_.last);
    aggregate_in_ = store_.add("aggregate.w_in", Role::Hidden, InitKind::Normal, {d, P * d}, {0, 1},
                               P * d, 1.0, {}, last);
    aggregate_in_bias_ =
        store_.add("aggregate.b_in", Role::Vector, InitKind::Zeros, {d}, {0}, 1, 1.0, {}, last);
    aggregate_out_ = store_.add("aggregate.w_out", Role::Hidden, InitKind::Normal, {P, d}, {1}, d,
                                1.0, {}, last);
    aggregate_out_bias_ =
        store_.add("aggregate.b_out", Role::Vector, InitKind::Zeros, {P}, {}, 1, 1.0, {}, last);
  }
  embedding_.tp = readout_.tp = tp;
  readout_.weight = c.tie_embeddings
                        ? embedding_.weight
                        : store_.add("readout", Role::Readout, InitKind::Normal, {vocab_size, d},
                                     {1}, d, 1.0, vocab_rows, holding(stage_.last));
}

void DenseTransformer::require_whole(const char* what) const {
  if (!stage_.first || !stage_.last || stage_.chunks.size() != 1 || stage_.chunks[0].first != 0 ||
      stage_.chunks[0].second != config_.n_layers)
    throw std::logic_error(std::string(what) + " needs the whole model on this rank");
}

torch::Tensor DenseTransformer::block(size_t layer, const torch::Tensor& x) const {
  const int64_t batch = x.size(0), seq = x.size(1);
  return block(layer, x.reshape({batch * seq, x.size(2)}), batch, seq).view_as(x);
}

torch::Tensor DenseTransformer::block(size_t layer, const torch::Tensor& x, int64_t batch,
                                      int64_t seq, DecodeCache* cache) const {
  const Block& b = blocks_[layer];
  const double eps = config_.norm_eps;
  // The probe (coordinate checks) records each branch's output: the composites keep it apart.
  const bool fused = fused_kernels_ && !probe_;
  // Under bf16 autocast on the CPU (one process in the layer: no tensor-parallel collective on the
  // normed activations), the norms that feed only matrix products write bf16 themselves.
  const bool bf16_normed = fused && !tp_.active() && x.device().is_cpu() &&
                           at::autocast::is_autocast_enabled(c10::DeviceType::CPU) &&
                           at::autocast::get_autocast_dtype(c10::DeviceType::CPU) == at::kBFloat16;
  // Gains used on this rank's tokens only (sequence parallelism) or on its heads only (QK-norm)
  // have their gradients summed over the group.
  auto token_gain = [&](const torch::Tensor& w) {
    return tp_.sequence_parallel ? parallel::replicated_in_partial_use(w, tp_) : w;
  };
  auto head_gain = [&](const torch::Tensor& w) {
    return parallel::replicated_in_partial_use(w, tp_);
  };

  if (b.mamba) {
    const torch::Tensor mixed = residual_branch(b.mamba->forward(
        kernels::rms_norm(x, token_gain(b.mamba_norm), eps, fused), batch, seq,
        cache ? &cache->conv[layer] : nullptr, cache ? &cache->ssm[layer] : nullptr));
    const torch::Tensor result = x + mixed;
    if (probe_) {
      probe_->record("mamba", mixed);
      probe_->record("residual", result);
    }
    return result;
  }

  // Attention: q, k, v read one entered input (one f / token all-gather for the three).
  const torch::Tensor h = parallel::enter_column_region(
      kernels::rms_norm(x, token_gain(b.attn_norm), eps, fused, bf16_normed), tp_);
  torch::Tensor q = b.wq.local(h).view({batch, seq, local_heads_, head_dim_});
  torch::Tensor k = b.wk.local(h).view({batch, seq, local_kv_heads_, head_dim_});
  torch::Tensor v = b.wv.local(h).view({batch, seq, local_kv_heads_, head_dim_});
  if (config_.qk_norm) {
    q = kernels::rms_norm(q, head_gain(b.q_norm), eps, fused);
    k = kernels::rms_norm(k, head_gain(b.k_norm), eps, fused);
  }
  std::tie(q, k) = rope_.apply_qk(q, k, fused, cache ? cache->length : 0);
  const int64_t prefix = b.prefix_k.defined() ? b.prefix_k.size(1) : 0;
  if (b.prefix_k.defined() && (!cache || cache->length == 0)) {
    // Stream i (rows i x batch / P ...) sees its own prefix before its tokens.
    auto per_row = [&](const torch::Tensor& w) {
      return w.view({streams_, 1, prefix, local_kv_heads_, head_dim_})
          .expand({streams_, batch / streams_, prefix, local_kv_heads_, head_dim_})
          .reshape({batch, prefix, local_kv_heads_, head_dim_})
          .to(k.dtype());
    };
    k = torch::cat({per_row(b.prefix_k), k}, 1);
    v = torch::cat({per_row(b.prefix_v), v.to(k.dtype())}, 1);
  }
  if (cache) {  // the sequence so far, then these positions
    torch::Tensor& keys = cache->keys[layer];
    torch::Tensor& values = cache->values[layer];
    keys = keys.defined() ? torch::cat({keys, k}, 1) : k;
    values = values.defined() ? torch::cat({values, v}, 1) : v;
    k = keys, v = values;
  }
  q = q.transpose(1, 2);  // [batch, heads, seq, head_dim]
  k = k.transpose(1, 2);  // [batch, kv_heads, prefix + (cached +) seq, head_dim]
  v = v.transpose(1, 2);
  const double scale = config_.scales.attention_scale;
  const torch::Tensor attn =
      (cache ? cached_attention(q, k, v, scale, config_.attention_window(), prefix)
             : causal_attention(q, k, v, scale, config_.attention_window(), prefix, fused))
          .transpose(1, 2)
          .reshape({batch * seq, local_heads_ * head_dim_});
  // out = x + the attention branch, and its norm for the MLP, in one pass when fused.
  torch::Tensor attn_out, out, normed;
  if (fused) {
    // (A router computes in fp32 from the normed activations: bf16 only for the SwiGLU's products.)
    const kernels::AddNormOutput added =
        kernels::add_rms_norm(x, b.wo.forward(attn), config_.scales.residual_branch,
                              token_gain(b.mlp_norm), eps, true, bf16_normed && !b.moe);
    out = added.sum;
    normed = added.normed;
  } else {
    attn_out = residual_branch(b.wo.forward(attn));
    out = x + attn_out;
    normed = kernels::rms_norm(out, token_gain(b.mlp_norm), eps, false);
  }
  torch::Tensor mlp;
  if (b.moe) {
    mlp = b.moe->forward(normed);
  } else {
    const torch::Tensor g = parallel::enter_column_region(normed, tp_);
    mlp = b.w_down.forward(kernels::swiglu(b.w_gate.local(g), b.w_up.local(g), fused));
  }
  const torch::Tensor mlp_out = residual_branch(mlp);
  const torch::Tensor result = out + mlp_out;
  if (probe_) {
    probe_->record("attention", attn_out);
    probe_->record("mlp", mlp_out);
    probe_->record("residual", result);
  }
  return result;
}

torch::Tensor DenseTransformer::residual_branch(const torch::Tensor& branch) const {
  const double r = config_.scales.residual_branch;
  return r == 1.0 ? branch : branch * r;
}

std::pair<torch::Tensor, torch::Tensor> DenseTransformer::aggregation(
    const torch::Tensor& streams) const {
  torch::Tensor weights;
  const torch::Tensor combined = aggregate(streams.reshape({-1, streams.size(2)}), &weights);
  return {weights, combined};
}

torch::Tensor DenseTransformer::aggregate(const torch::Tensor& x, torch::Tensor* weights) const {
  const int64_t P = streams_, tokens = x.size(0) / P, d = x.size(1);
  const torch::Tensor streams = x.view({P, tokens, d});
  const torch::Tensor concatenated = streams.permute({1, 0, 2}).reshape({tokens, P * d});
  const torch::Tensor hidden =
      torch::silu(torch::matmul(concatenated, aggregate_in_.t()) + aggregate_in_bias_);
  const torch::Tensor scores = torch::matmul(hidden, aggregate_out_.t()) + aggregate_out_bias_;
  // Label smoothing of the weights keeps every stream's share above eps / P, so none is starved of
  // gradient (Chen et al. 2025).
  const double eps = config_.parscale.aggregation_smoothing;
  const torch::Tensor w =
      scores.to(at::promote_types(scores.scalar_type(), torch::kFloat32)).softmax(-1) *
          (1.0 - eps) +
      eps / static_cast<double>(P);
  if (weights) *weights = w;
  return (streams * w.t().unsqueeze(-1).to(streams.dtype())).sum(0);
}

torch::Tensor DenseTransformer::readout(const torch::Tensor& x) const {
  torch::Tensor normed = final_normed(x);
  if (streams_ > 1) normed = aggregate(normed);
  torch::Tensor logits = readout_.forward(normed);
  if (config_.scales.logits != 1.0) logits = logits * config_.scales.logits;
  if (probe_) probe_->record("logits", logits);
  return logits;
}

torch::Tensor DenseTransformer::embed(const torch::Tensor& tokens) const {
  torch::Tensor x = embedding_.forward(tokens.reshape({-1}));
  if (streams_ > 1) x = x.repeat({streams_, 1});  // the P streams, stream-major
  if (probe_) probe_->record("embedding", x);
  return x;
}

torch::Tensor DenseTransformer::final_normed(const torch::Tensor& x) const {
  const torch::Tensor gain =
      tp_.sequence_parallel ? parallel::replicated_in_partial_use(final_norm_, tp_) : final_norm_;
  return kernels::rms_norm(x, gain, config_.norm_eps, fused_kernels_ && !probe_);
}

ChunkOutput DenseTransformer::forward_chunk(size_t chunk, const torch::Tensor& tokens,
                                            const torch::Tensor& targets,
                                            const torch::Tensor& activation) {
  const int64_t batch = tokens.size(0), seq = tokens.size(1);
  // [tokens (this rank's with sequence parallelism), d_model]; P streams: P x the tokens.
  torch::Tensor x = chunk == 0 && stage_.first ? embed(tokens) : activation;
  const auto [begin, end] = stage_.chunks.at(chunk);
  for (int64_t l = begin; l < end; ++l)
    x = block(static_cast<size_t>(l), x, streams_ * batch, seq);
  if (chunk + 1 < stage_.chunks.size() || !stage_.last) return {x, {}};
  parallel::CrossEntropyOutput ce;
  if (fused_kernels_ && !probe_ && !tp_.active()) {
    // The readout and its loss in chunks of tokens, never the whole fp32 logits (kernels/).
    torch::Tensor normed = final_normed(x);
    if (streams_ > 1) normed = aggregate(normed);
    const torch::Tensor y = targets.reshape({-1});
    if (kernels::readout_cross_entropy_fusable(normed, readout_.weight, y)) {
      const auto parts =
          kernels::readout_cross_entropy(normed, readout_.weight, y, config_.scales.logits);
      ce = {parts.loss.mean(), parts.lse.square().mean()};
    }
  }
  if (!ce.loss.defined()) {
    LADDER_OP_CLASS("loss");
    const torch::Tensor flat = readout(x);  // [tokens, vocab block]
    ce = parallel::vocab_parallel_cross_entropy(flat, targets.reshape({-1}), tp_, vocab_size_);
  }
  ModelOutput out{ce.loss, ce.z_loss, ce.loss};
  if (config_.z_loss > 0) out.objective = ce.loss + config_.z_loss * ce.z_loss;
  return {{}, out};
}

std::vector<int64_t> DenseTransformer::activation_shape(int64_t batch, int64_t seq) const {
  return {streams_ * batch * seq / (tp_.sequence_parallel ? tp_.size() : 1), config_.d_model};
}

torch::Tensor DenseTransformer::decode(const torch::Tensor& tokens, DecodeCache& cache) {
  require_whole("decode");
  torch::NoGradGuard no_grad;
  const int64_t batch = tokens.size(0), n = tokens.size(1);
  if (cache.length + n > rope_.max_positions())
    throw Error("decode", "a sequence of " + std::to_string(cache.length + n) +
                              " tokens is longer than the model was built for (" +
                              std::to_string(rope_.max_positions()) + ")");
  if (cache.keys.empty())
    for (auto* layers : {&cache.keys, &cache.values, &cache.conv, &cache.ssm})
      layers->resize(blocks_.size());
  torch::Tensor x = embed(tokens);
  for (size_t l = 0; l < blocks_.size(); ++l)
    x = block(l, x, streams_ * batch, n, &cache);
  cache.length += n;
  return readout(x).view({batch, n, -1});
}

torch::Tensor DenseTransformer::logits(const torch::Tensor& tokens) {
  require_whole("logits");
  const int64_t batch = tokens.size(0), seq = tokens.size(1);
  torch::Tensor x = embed(tokens);
  for (size_t l = 0; l < blocks_.size(); ++l)
    x = block(l, x, streams_ * batch, seq);
  // [batch, seq, vocab]: this rank's block of the (padded) vocabulary at tp > 1.
  return readout(x).view({batch, seq, -1});
}

ModelOutput DenseTransformer::loss(const torch::Tensor& tokens, const torch::Tensor& targets) {
  require_whole("loss");
  return forward_chunk(0, tokens, targets, {}).loss;
}

namespace {

// Matrix parameters of one layer: all of them, and those a token uses (the router, top_k routed
// experts, the shared experts; every one in a dense layer).
struct LayerMatrices {
  double total = 0, active = 0;
};

LayerMatrices layer_matrices(const ModelConfig& c, int64_t layer) {
  const double d = static_cast<double>(c.d_model);
  if (c.mamba(layer)) {
    const double m = static_cast<double>(MambaSizes(c).matmul_params(c.d_model));
    return {m, m};
  }
  const double kv = static_cast<double>(c.n_kv_heads * (c.d_model / c.n_heads));
  const double attention = 2 * d * d + 2 * kv * d;  // wq, wo, wk, wv
  if (!c.routed(layer)) {
    const double mlp = 3 * static_cast<double>(c.ffn_hidden) * d;
    return {attention + mlp, attention + mlp};
  }
  const double expert = 3 * static_cast<double>(c.moe.expert_ffn) * d;
  const double router = static_cast<double>(c.experts()) * d;
  const double shared = static_cast<double>(c.moe.shared_experts) * expert;
  return {attention + router + shared + static_cast<double>(c.experts()) * expert,
          attention + router + shared + static_cast<double>(c.moe.top_k) * expert};
}

}  // namespace

// Forward-and-backward FLOPs per token outside the parameters' matrix products (contract 8): causal
// self-attention over the context (12 d T, within the window when there is one), or a Mamba-2
// layer's convolution and chunked scan (3 x its forward FLOPs).
double mixing_flops(const ModelConfig& c, int64_t layer, int64_t seq_len) {
  if (c.mamba(layer)) return 3.0 * MambaSizes(c).scan_flops(c.hybrid.chunk);
  const int64_t context =
      (c.attention_window() > 0 ? std::min(c.attention_window(), seq_len) : seq_len) +
      c.prefix_tokens();
  return 12.0 * static_cast<double>(c.d_model) * static_cast<double>(context);
}

StageCosts DenseTransformer::stage_costs(const ModelConfig& c, int64_t vocab_size, int64_t seq_len,
                                         parallel::StageBalance by) {
  const double d = static_cast<double>(c.d_model);
  const double v = static_cast<double>(vocab_size);
  StageCosts costs;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerMatrices m = layer_matrices(c, l);
    if (by == parallel::StageBalance::Params) {
      // Memory follows every expert; the vectors are the norms (and a router's bias).
      const double vectors =
          c.mamba(l) ? d + static_cast<double>(MambaSizes(c).other_params())
                     : 2 * d + (c.qk_norm ? 2.0 * static_cast<double>(c.d_model / c.n_heads) : 0) +
                           (c.routed(l) && c.moe.balance == Balance::Bias
                                ? static_cast<double>(c.experts())
                                : 0);
      costs.layers.push_back(m.total + vectors);
    } else {
      // FLOPs per token as in accounting(): a token pays for the experts it uses.
      costs.layers.push_back(static_cast<double>(c.streams()) *
                             (6 * m.active + mixing_flops(c, l, seq_len)));
    }
  }
  if (by == parallel::StageBalance::Params) {
    costs.first = v * d;     // the embedding
    costs.last = v * d + d;  // the readout (a tied copy weighs the same) and the final norm
  } else {
    costs.last = 6 * v * d;  // the embedding costs no FLOPs
  }
  return costs;
}

SizeAccounting DenseTransformer::accounting(int64_t seq_len) const {
  SizeAccounting a;
  a.total_params = store_.numel();
  a.embedding_params = store_.numel(Role::Embedding);
  a.non_embedding_params = a.total_params - a.embedding_params;
  // Routed experts a token does not use are not active (Clark et al. 2022; DeepSeek-V3 counts
  // "activated parameters" the same way).
  double inactive = 0;
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    const LayerMatrices m = layer_matrices(config_, l);
    inactive += m.total - m.active;
  }
  a.active_params = a.total_params - static_cast<int64_t>(inactive);
  a.active_non_embedding_params = a.active_params - a.embedding_params;
  // Every active parameter but the embedding enters a matmul once per token (contract 8; a Mamba-2
  // layer's few vector parameters are counted with them); a tied matrix enters as readout.
  const double matmul_params =
      static_cast<double>(a.active_non_embedding_params) +
      (config_.tie_embeddings ? static_cast<double>(vocab_size_ * config_.d_model) : 0.0);
  double mixing = 0;
  for (int64_t l = 0; l < config_.n_layers; ++l)
    mixing += mixing_flops(config_, l, seq_len);
  a.flops_per_token = 6.0 * matmul_params + mixing;
  if (streams_ > 1 || config_.prefix_tokens() > 0) {
    // ParScale: the backbone runs P times per token (its prefixes are looked up, not multiplied);
    // the aggregation MLP and the readout once (Chen et al. 2025 count the same).
    const double readout = static_cast<double>(vocab_size_ * config_.d_model);
    const double P = static_cast<double>(streams_), d = static_cast<double>(config_.d_model);
    const double kv = static_cast<double>(config_.n_kv_heads * head_dim_);
    int64_t attention_layers = 0;
    for (int64_t l = 0; l < config_.n_layers; ++l)
      attention_layers += config_.mamba(l) ? 0 : 1;
    // Keys and values per stream, layer and prefix position; the MLP's two layers with biases.
    const double prefixes = 2.0 * static_cast<double>(attention_layers) * P *
                            static_cast<double>(config_.prefix_tokens()) * kv;
    const double aggregator = streams_ > 1 ? P * d * d + d + P * d + P : 0.0;
    const double backbone = matmul_params - readout - prefixes - aggregator;
    a.flops_per_token =
        static_cast<double>(streams_) * (6.0 * backbone + mixing) + 6.0 * (readout + aggregator);
  }
  a.width = config_.d_model;
  a.depth = config_.n_layers;
  return a;
}

torch::Tensor DenseTransformer::take_routing_counts() {
  if (config_.experts() == 0) return {};
  // Every routed layer has its RoutedExperts, held here or not (those held elsewhere count zero).
  std::vector<torch::Tensor> rows;
  for (const Block& b : blocks_)
    if (b.moe) rows.push_back(b.moe->take_counts());
  return torch::stack(rows);
}

void DenseTransformer::balance_experts(const torch::Tensor& counts) {
  int64_t row = 0;
  for (const Block& b : blocks_)
    if (b.moe) b.moe->balance(counts[row++].narrow(0, 0, config_.experts()));
}

void DenseTransformer::set_objective_scale(double scale) {
  for (Block& b : blocks_)
    if (b.moe) b.moe->set_objective_scale(scale);
}

}  // namespace ladder::models
