#include "models/mamba.h"

#include <cmath>
#include <limits>

#include "core/op_profile.h"
#include "models/blocks.h"
#include "models/precision.h"

namespace ladder::models {
namespace {

// At least fp32 (bf16 upcast; fp64, in the tests, kept).
torch::Tensor at_least_fp32(const torch::Tensor& t) {
  return t.to(at::promote_types(t.scalar_type(), torch::kFloat32));
}

// segsum(a)[..., i, j] = a[j + 1] + ... + a[i] for i >= j, -inf above the diagonal: the log of the
// decay from position j to position i within a chunk (exp gives the causal decay matrix L).
torch::Tensor segment_sums(const torch::Tensor& a) {
  const int64_t n = a.size(-1);
  const auto options = torch::TensorOptions(torch::kBool).device(a.device());
  const torch::Tensor strictly_below = torch::ones({n, n}, options).tril(-1);
  const torch::Tensor on_or_below = torch::ones({n, n}, options).tril(0);
  std::vector<int64_t> expanded = a.sizes().vec();
  expanded.push_back(n);
  const torch::Tensor sums =
      a.unsqueeze(-1).expand(expanded).masked_fill(strictly_below.logical_not(), 0).cumsum(-2);
  return sums.masked_fill(on_or_below.logical_not(), -std::numeric_limits<double>::infinity());
}

}  // namespace

torch::Tensor ssd_chunked(const torch::Tensor& x_in, const torch::Tensor& dt_in,
                          const torch::Tensor& A, const torch::Tensor& B_in,
                          const torch::Tensor& C_in, int64_t chunk) {
  const int64_t batch = x_in.size(0), seq = x_in.size(1), heads = x_in.size(2), p = x_in.size(3);
  const int64_t n = B_in.size(2);
  // Pad to whole chunks: the padded positions come after every real one, so nothing reaches back.
  const int64_t padded = (seq + chunk - 1) / chunk * chunk, pad = padded - seq;
  auto padded_seq = [&](const torch::Tensor& t) {
    if (pad == 0) return t;
    std::vector<int64_t> shape = t.sizes().vec();
    shape[1] = pad;
    return torch::cat({t, torch::zeros(shape, t.options())}, 1);
  };
  const torch::Tensor x = padded_seq(x_in), dt = padded_seq(dt_in);
  const torch::Tensor B = padded_seq(B_in), C = padded_seq(C_in);
  const int64_t chunks = padded / chunk;

  // Discretised inputs (zero-order hold on x dt, as the reference's "minimal" SSD): X = x dt and
  // the log-decay a = dt A, per chunk.
  const torch::Tensor X = (x * dt.unsqueeze(-1)).view({batch, chunks, chunk, heads, p});
  const torch::Tensor a = (dt * A).view({batch, chunks, chunk, heads}).permute({0, 3, 1, 2});
  const torch::Tensor Bc = B.view({batch, chunks, chunk, n});
  const torch::Tensor Cc = C.view({batch, chunks, chunk, n});
  const torch::Tensor a_cum = a.cumsum(-1);  // [batch, heads, chunks, Q]

  // 1. Within each chunk, the quadratic ("attention") form: y = (L o C B^T) X.
  const torch::Tensor L = segment_sums(a).exp();  // [batch, heads, chunks, Q, Q]
  const torch::Tensor CB = torch::einsum("bcln,bcsn->bcls", {Cc, Bc});
  const torch::Tensor y_diag = torch::einsum("bcls,bhcls,bcshp->bclhp", {CB, L, X});

  // 2. Each chunk's final state from its own inputs: sum_s exp(a_cum[end] - a_cum[s]) X_s B_s^T.
  const torch::Tensor decay_to_end = (a_cum.narrow(-1, chunk - 1, 1) - a_cum).exp();
  torch::Tensor states = torch::einsum("bcln,bhcl,bclhp->bchpn", {Bc, decay_to_end, X});

  // 3. Between chunks: each chunk starts from the states of the chunks before, decayed.
  states = torch::cat({torch::zeros_like(states.narrow(1, 0, 1)), states}, 1);
  const torch::Tensor chunk_decay = torch::constant_pad_nd(a_cum.select(-1, chunk - 1), {1, 0});
  const torch::Tensor passed =
      torch::einsum("bhzc,bchpn->bzhpn", {segment_sums(chunk_decay).exp(), states});
  const torch::Tensor starts = passed.narrow(1, 0, chunks);  // the state entering each chunk

  // 4. The entering state's contribution to every position of its chunk: C_t h exp(a_cum[t]).
  const torch::Tensor y_off = torch::einsum("bcln,bchpn,bhcl->bclhp", {Cc, starts, a_cum.exp()});
  return (y_diag + y_off).reshape({batch, padded, heads, p}).narrow(1, 0, seq);
}

torch::Tensor ssd_recurrent(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                            const torch::Tensor& B, const torch::Tensor& C, torch::Tensor* state) {
  const int64_t batch = x.size(0), seq = x.size(1), heads = x.size(2), p = x.size(3);
  torch::Tensor h =
      state && state->defined() ? *state : torch::zeros({batch, heads, p, B.size(2)}, x.options());
  std::vector<torch::Tensor> ys;
  for (int64_t t = 0; t < seq; ++t) {
    const torch::Tensor decay = (dt.select(1, t) * A).exp();                     // [batch, heads]
    const torch::Tensor input = x.select(1, t) * dt.select(1, t).unsqueeze(-1);  // [b, h, P]
    h = h * decay.unsqueeze(-1).unsqueeze(-1) +
        input.unsqueeze(-1) * B.select(1, t).unsqueeze(1).unsqueeze(1);
    ys.push_back(torch::einsum("bhpn,bn->bhp", {h, C.select(1, t)}));
  }
  if (state) *state = h;
  return torch::stack(ys, 1);
}

Mamba2Mixer::Mamba2Mixer(const ModelConfig& c, const parallel::TensorParallel& tp,
                         ParamStore& store, const std::string& prefix, double residual_scale,
                         Holding holding)
    : sizes_(c),
      chunk_(c.hybrid.chunk),
      norm_eps_(c.norm_eps),
      tp_(tp),
      local_heads_(sizes_.heads / tp.size()) {
  const int64_t d = c.d_model, inner = sizes_.inner, heads = sizes_.heads, n = sizes_.state;
  const int64_t k = sizes_.conv_kernel;
  const Shard rows{0, tp.rank(), tp.size()}, columns{1, tp.rank(), tp.size()};
  auto add = [&](const std::string& name, Role role, InitKind init, std::vector<int64_t> shape,
                 std::vector<int> width_dims, int64_t fan_in, double multiplier, Shard shard) {
    return store.add(prefix + name, role, init, std::move(shape), std::move(width_dims), fan_in,
                     multiplier, shard, holding);
  };
  w_z_.weight = add("w_z", Role::Hidden, InitKind::Normal, {inner, d}, {0, 1}, d, 1.0, rows);
  w_x_.weight = add("w_x", Role::Hidden, InitKind::Normal, {inner, d}, {0, 1}, d, 1.0, rows);
  w_B_ = add("w_B", Role::Hidden, InitKind::Normal, {n, d}, {1}, d, 1.0, {});
  w_C_ = add("w_C", Role::Hidden, InitKind::Normal, {n, d}, {1}, d, 1.0, {});
  w_dt_.weight = add("w_dt", Role::Hidden, InitKind::Normal, {heads, d}, {0, 1}, d, 1.0, rows);
  // The depthwise convolution: fan-in K per channel (PyTorch's Conv1d scale).
  conv_x_ = add("conv_x", Role::Vector, InitKind::Normal, {inner, k}, {0}, k, 1.0, rows);
  conv_B_ = add("conv_B", Role::Vector, InitKind::Normal, {n, k}, {}, k, 1.0, {});
  conv_C_ = add("conv_C", Role::Vector, InitKind::Normal, {n, k}, {}, k, 1.0, {});
  conv_x_bias_ = add("conv_x_bias", Role::Vector, InitKind::Zeros, {inner}, {0}, 1, 1.0, rows);
  conv_B_bias_ = add("conv_B_bias", Role::Vector, InitKind::Zeros, {n}, {}, 1, 1.0, {});
  conv_C_bias_ = add("conv_C_bias", Role::Vector, InitKind::Zeros, {n}, {}, 1, 1.0, {});
  // As the reference Mamba-2: dt starts log-spaced in [0.001, 0.1] across heads (dt_bias its
  // inverse softplus) and A = -exp(A_log) spread over [1, 16]; here evenly rather than drawn, so
  // the values are the same for every seed and layout.
  dt_bias_ = add("dt_bias", Role::Vector, InitKind::Given, {heads}, {0}, 1, 1.0, rows);
  A_log_ = add("A_log", Role::Vector, InitKind::Given, {heads}, {0}, 1, 1.0, rows);
  const torch::Tensor spread = heads > 1 ? torch::linspace(0.0, 1.0, heads, torch::kFloat64)
                                         : torch::zeros({1}, torch::kFloat64);
  const torch::Tensor dt0 = (std::log(1e-3) + spread * (std::log(1e-1) - std::log(1e-3))).exp();
  store.set_given(prefix + "dt_bias", dt0 + torch::log(-torch::expm1(-dt0)));
  store.set_given(prefix + "A_log", torch::log(1.0 + 15.0 * spread));
  D_ = add("D", Role::Vector, InitKind::Ones, {heads}, {0}, 1, 1.0, rows);
  norm_ = add("norm", Role::Vector, InitKind::Ones, {inner}, {0}, 1, 1.0, rows);
  w_out_.weight = add("w_out", Role::Hidden, InitKind::Normal, {d, inner}, {0, 1}, inner,
                      residual_scale, columns);
  w_z_.tp = w_x_.tp = w_dt_.tp = w_out_.tp = tp;
}

torch::Tensor Mamba2Mixer::forward(const torch::Tensor& normed, int64_t batch, int64_t seq,
                                   torch::Tensor* conv_state, torch::Tensor* ssm_state) const {
  const int64_t heads = local_heads_, p = sizes_.head_dim, n = sizes_.state;
  const int64_t k = sizes_.conv_kernel;
  // Replicated tensors each rank uses for its own heads: gradients summed over the group.
  auto whole = [&](const torch::Tensor& w) { return parallel::replicated_in_partial_use(w, tp_); };

  const torch::Tensor h = parallel::enter_column_region(normed, tp_);  // [tokens, d], all tokens
  const torch::Tensor z = w_z_.local(h);                               // [tokens, heads x P]
  const torch::Tensor dt_raw = w_dt_.local(h);                         // [tokens, heads]
  // x, B and C through the causal depthwise convolution along each sequence, then SiLU.
  const torch::Tensor xbc = torch::cat(
      {w_x_.local(h), torch::matmul(h, whole(w_B_).t()), torch::matmul(h, whole(w_C_).t())}, 1);
  const int64_t channels = xbc.size(1);
  const torch::Tensor weight = torch::cat({conv_x_, whole(conv_B_), whole(conv_C_)}).unsqueeze(1);
  const torch::Tensor bias = torch::cat({conv_x_bias_, whole(conv_B_bias_), whole(conv_C_bias_)});
  torch::Tensor conv;
  if (conv_state) {
    // Decoding: the window of the K - 1 inputs before these (zeros at the start, as the padding).
    if (!conv_state->defined()) *conv_state = torch::zeros({batch, k - 1, channels}, xbc.options());
    const torch::Tensor joined = torch::cat({*conv_state, xbc.view({batch, seq, channels})}, 1);
    const int64_t no_padding = 0;
    conv = torch::conv1d(joined.transpose(1, 2), weight.to(xbc.dtype()), bias.to(xbc.dtype()),
                         /*stride=*/1, no_padding, /*dilation=*/1, /*groups=*/channels)
               .transpose(1, 2);
    *conv_state = joined.narrow(1, seq, k - 1);
  } else {
    conv = torch::conv1d(xbc.view({batch, seq, channels}).transpose(1, 2), weight.to(xbc.dtype()),
                         bias.to(xbc.dtype()), /*stride=*/1, /*padding=*/k - 1, /*dilation=*/1,
                         /*groups=*/channels)
               .narrow(2, 0, seq)
               .transpose(1, 2);  // [batch, seq, channels]: position t saw t - K + 1 .. t
  }
  const torch::Tensor activated = torch::silu(conv);

  torch::Tensor y;
  {
    LADDER_OP_CLASS("ssm");
    const NoAutocast fp32(h.device().type());
    const torch::Tensor xs = at_least_fp32(activated.narrow(2, 0, heads * p));
    const torch::Tensor B = at_least_fp32(activated.narrow(2, heads * p, n));
    const torch::Tensor C = at_least_fp32(activated.narrow(2, heads * p + n, n));
    const torch::Tensor dt =
        torch::softplus(at_least_fp32(dt_raw).view({batch, seq, heads}) + dt_bias_);
    const torch::Tensor A = -A_log_.exp();
    const torch::Tensor x = xs.reshape({batch, seq, heads, p});
    y = (ssm_state ? ssd_recurrent(x, dt, A, B, C, ssm_state)
                   : ssd_chunked(x, dt, A, B, C, chunk_)) +
        x * D_.view({heads, 1});
    // The gated RMSNorm, norm(y x silu(z)) x gain, over all of d_inner: one group, as B and C
    // (Mamba-2's RMSNormGated with ngroups = 1). Normalising each head on its own made every head's
    // scale free, and a head whose output is nearly x_t times a scale (fast decay: dt 0.1, A -16)
    // then had gradients for B, C, dt and D that are a near-exact cancellation: 100x fp32's
    // rounding at ssm_state 64 (docs/hybrid.md). Under tensor parallelism the sum of squares
    // adds every rank's heads: an all-reduce forward and backward.
    const torch::Tensor gated = (y * torch::silu(at_least_fp32(z).view({batch, seq, heads, p})))
                                    .reshape({batch * seq, heads * p});
    torch::Tensor squares = gated.square().sum(-1, /*keepdim=*/true);
    if (tp_.active())
      squares = parallel::reduce_from_tensor_parallel(
          parallel::copy_to_tensor_parallel(squares, tp_), tp_);
    y = gated * torch::rsqrt(squares / static_cast<double>(sizes_.inner) + norm_eps_) * norm_;
  }
  return w_out_.forward(y);
}

}  // namespace ladder::models
