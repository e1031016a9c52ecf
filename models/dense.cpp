#include "models/dense.h"

#include <cmath>

namespace ladder::models {

DenseTransformer::DenseTransformer(const ModelConfig& c, int64_t vocab_size, int64_t max_seq_len)
    : config_(c),
      vocab_size_(vocab_size),
      head_dim_(c.d_model / c.n_heads),
      rope_(c.d_model / c.n_heads, max_seq_len, c.rope_theta) {
  const int64_t d = c.d_model, f = c.ffn_hidden, kv = c.n_kv_heads * head_dim_;
  // Output projections into the residual stream start smaller by 1/sqrt(2 L), as in GPT-2
  // (Radford et al. 2019), so the residual's variance does not grow with depth at init.
  const double residual_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(c.n_layers));
  // A tied matrix is also the readout: start it at readout scale (1/sqrt(d)) rather than embedding
  // scale.
  embedding_.weight =
      store_.add("embedding", Role::Embedding, InitKind::Normal, {vocab_size, d}, {1}, /*fan_in=*/1,
                 c.tie_embeddings ? 1.0 / std::sqrt(static_cast<double>(d)) : 1.0);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    Block b;
    b.attn_norm = store_.add(p + "attn_norm", Role::Vector, InitKind::Ones, {d}, {0}, 1);
    b.wq.weight = store_.add(p + "attn.wq", Role::Hidden, InitKind::Normal, {d, d}, {0, 1}, d);
    b.wk.weight = store_.add(p + "attn.wk", Role::Hidden, InitKind::Normal, {kv, d}, {0, 1}, d);
    b.wv.weight = store_.add(p + "attn.wv", Role::Hidden, InitKind::Normal, {kv, d}, {0, 1}, d);
    if (c.qk_norm) {
      b.q_norm = store_.add(p + "attn.q_norm", Role::Vector, InitKind::Ones, {head_dim_}, {}, 1);
      b.k_norm = store_.add(p + "attn.k_norm", Role::Vector, InitKind::Ones, {head_dim_}, {}, 1);
    }
    b.wo.weight = store_.add(p + "attn.wo", Role::Hidden, InitKind::Normal, {d, d}, {0, 1}, d,
                             residual_scale);
    b.mlp_norm = store_.add(p + "mlp_norm", Role::Vector, InitKind::Ones, {d}, {0}, 1);
    b.w_gate.weight =
        store_.add(p + "mlp.w_gate", Role::Hidden, InitKind::Normal, {f, d}, {0, 1}, d);
    b.w_up.weight = store_.add(p + "mlp.w_up", Role::Hidden, InitKind::Normal, {f, d}, {0, 1}, d);
    b.w_down.weight = store_.add(p + "mlp.w_down", Role::Hidden, InitKind::Normal, {d, f}, {0, 1},
                                 f, residual_scale);
    blocks_.push_back(b);
  }
  final_norm_ = store_.add("final_norm", Role::Vector, InitKind::Ones, {d}, {0}, 1);
  readout_ = c.tie_embeddings
                 ? embedding_.weight
                 : store_.add("readout", Role::Readout, InitKind::Normal, {vocab_size, d}, {1}, d);
}

torch::Tensor DenseTransformer::block(size_t layer, const torch::Tensor& x) const {
  const Block& b = blocks_[layer];
  const int64_t batch = x.size(0), seq = x.size(1);
  const double eps = config_.norm_eps;

  torch::Tensor h = rms_norm(x, b.attn_norm, eps);
  torch::Tensor q = b.wq.forward(h).view({batch, seq, config_.n_heads, head_dim_});
  torch::Tensor k = b.wk.forward(h).view({batch, seq, config_.n_kv_heads, head_dim_});
  torch::Tensor v = b.wv.forward(h).view({batch, seq, config_.n_kv_heads, head_dim_});
  if (config_.qk_norm) {
    q = rms_norm(q, b.q_norm, eps);
    k = rms_norm(k, b.k_norm, eps);
  }
  q = rope_.apply(q).transpose(1, 2);  // [batch, heads, seq, head_dim]
  k = rope_.apply(k).transpose(1, 2);
  v = v.transpose(1, 2);
  const torch::Tensor attn =
      causal_attention(q, k, v).transpose(1, 2).reshape({batch, seq, config_.d_model});
  torch::Tensor out = x + b.wo.forward(attn);

  h = rms_norm(out, b.mlp_norm, eps);
  return out + b.w_down.forward(swiglu(b.w_gate.forward(h), b.w_up.forward(h)));
}

torch::Tensor DenseTransformer::hidden(const torch::Tensor& tokens) const {
  torch::Tensor x = embedding_.forward(tokens);
  for (size_t l = 0; l < blocks_.size(); ++l)
    x = block(l, x);
  return rms_norm(x, final_norm_, config_.norm_eps);
}

torch::Tensor DenseTransformer::logits(const torch::Tensor& tokens) {
  return torch::matmul(hidden(tokens), readout_.t());
}

ModelOutput DenseTransformer::loss(const torch::Tensor& tokens, const torch::Tensor& targets) {
  const torch::Tensor flat = logits(tokens).view({-1, vocab_size_});
  auto ce = parallel::vocab_parallel_cross_entropy(flat, targets.reshape({-1}));
  ModelOutput out{ce.loss, ce.z_loss, ce.loss};
  if (config_.z_loss > 0) out.objective = ce.loss + config_.z_loss * ce.z_loss;
  return out;
}

SizeAccounting DenseTransformer::accounting(int64_t seq_len) const {
  SizeAccounting a;
  a.total_params = store_.numel();
  a.embedding_params = store_.numel(Role::Embedding);
  a.non_embedding_params = a.total_params - a.embedding_params;
  a.active_params = a.total_params;
  // Every parameter but the embedding enters a matmul once per token; a tied matrix enters as
  // readout.
  const double matmul_params =
      static_cast<double>(a.non_embedding_params) +
      (config_.tie_embeddings ? static_cast<double>(vocab_size_ * config_.d_model) : 0.0);
  a.flops_per_token = 6.0 * matmul_params + 12.0 * static_cast<double>(config_.n_layers) *
                                                static_cast<double>(config_.d_model) *
                                                static_cast<double>(seq_len);
  a.width = config_.d_model;
  a.depth = config_.n_layers;
  return a;
}

}  // namespace ladder::models
