// The Mamba-2 mixer (Dao and Gu 2024, "Transformers are SSMs: Generalized Models and Efficient
// Algorithms Through Structured State Space Duality"), the M layers of model.arch = "hybrid".
//
// For the normed input u of each token: projections z, x (d_inner = expand x d_model channels, H =
// d_inner / P heads of P channels), B, C (N each, one group shared by every head) and dt (one per
// head); a causal depthwise convolution of width K over x, B and C along the sequence, then SiLU;
// dt = softplus(dt + dt_bias); the selective state-space layer with a scalar A = -exp(A_log) per
// head,
//     h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T      (h_t: [P, N] per head)
//     y_t = h_t C_t + D x_t,
// computed by the chunked SSD algorithm (within a chunk of Q tokens as matrix products of the
// "attention-like" form, between chunks by passing the states); a gated RMSNorm, norm(y x silu(z)),
// per head; and the output projection back to d_model.
//
// Tensor parallelism splits by heads: z, x, dt and the output projection are column- and
// row-parallel like attention's q and o; the convolution's x channels, dt_bias, A_log, D and the
// gated norm's gain are split with their heads; B, C and their convolution channels are computed
// whole on every rank (one group), so their weights enter through f and their gradients are summed
// over the group. The gated norm is per head (not over all of d_inner, as the reference code's
// single group does) so that it needs no communication: a choice of ladder's, documented in
// docs/hybrid.md.
//
// The scan runs in fp32 outside autocast (exponentials of cumulative sums); the projections follow
// train.precision.
#pragma once

#include <string>

#include <torch/torch.h>

#include "models/config.h"
#include "models/params.h"
#include "parallel/tensor_parallel.h"

namespace ladder::models {

// The SSD scan, chunked. x [batch, seq, heads, P], dt [batch, seq, heads] (positive), A [heads]
// (negative), B and C [batch, seq, N] -> y [batch, seq, heads, P] (without the D skip). `chunk`
// need not divide seq: the last chunk is padded with tokens that have no effect on the others
// (later positions cannot reach earlier ones).
torch::Tensor ssd_chunked(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                          const torch::Tensor& B, const torch::Tensor& C, int64_t chunk);

// The same by the sequential recurrence, one token at a time: the reference the tests hold the
// chunked algorithm to, and decoding's scan. `state` (optional) is the state h [batch, heads, P,
// N] before the first token (undefined: zeros) and receives the state after the last.
torch::Tensor ssd_recurrent(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                            const torch::Tensor& B, const torch::Tensor& C,
                            torch::Tensor* state = nullptr);

// The sizes a Mamba-2 layer derives from the config.
struct MambaSizes {
  int64_t inner, heads, head_dim, state, conv_kernel;
  explicit MambaSizes(const ModelConfig& c)
      : inner(c.hybrid.expand * c.d_model),
        heads(c.hybrid.expand * c.d_model / c.hybrid.ssm_head_dim),
        head_dim(c.hybrid.ssm_head_dim),
        state(c.hybrid.ssm_state),
        conv_kernel(c.hybrid.conv_kernel) {}
  // Parameters in matrix products per token: the input projections and the output projection.
  int64_t matmul_params(int64_t d_model) const {
    return d_model * (2 * inner + 2 * state + heads) + inner * d_model;
  }
  // Every other parameter: convolution weights and biases, dt_bias, A_log, D, the gated norm.
  int64_t other_params() const {
    return (inner + 2 * state) * (conv_kernel + 1) + 3 * heads + inner;
  }
  // Forward FLOPs per token outside the projections: the convolution, and the chunked scan's
  // products with chunk length Q — C B^T within a chunk (2 Q N per head), its masked product with
  // x (2 Q P), a chunk's state from B and x (2 N P) and the output from C and the passed state
  // (2 N P).
  double scan_flops(int64_t chunk) const {
    const double q = static_cast<double>(chunk), n = static_cast<double>(state),
                 p = static_cast<double>(head_dim), h = static_cast<double>(heads);
    return 2.0 * static_cast<double>((inner + 2 * state) * conv_kernel) +
           h * (2 * q * n + 2 * q * p + 4 * n * p);
  }
};

class Mamba2Mixer {
 public:
  // Registers the layer's parameters under `prefix` (e.g. "layers.2.mamba.") in `store`.
  Mamba2Mixer(const ModelConfig& config, const parallel::TensorParallel& tp, ParamStore& store,
              const std::string& prefix, double residual_scale, Holding holding);

  // normed [tokens, d_model] of sequences [batch, seq] (with sequence parallelism this rank's block
  // of the tokens) -> the mixer's output in the same layout, reduced over tp.
  // Decoding (models/model.h DecodeCache): `conv_state` [batch, K - 1, channels] and `ssm_state`
  // carry the sequence so far (undefined at its start) and are updated; the scan then runs by the
  // recurrence.
  torch::Tensor forward(const torch::Tensor& normed, int64_t batch, int64_t seq,
                        torch::Tensor* conv_state = nullptr,
                        torch::Tensor* ssm_state = nullptr) const;

 private:
  MambaSizes sizes_;
  int64_t chunk_;
  double norm_eps_;
  parallel::TensorParallel tp_;
  int64_t local_heads_;
  parallel::ColumnParallelLinear w_z_, w_x_, w_dt_;
  parallel::RowParallelLinear w_out_;
  torch::Tensor w_B_, w_C_;                 // [N, d_model], whole on every rank
  torch::Tensor conv_x_, conv_B_, conv_C_;  // [channels, K]
  torch::Tensor conv_x_bias_, conv_B_bias_, conv_C_bias_;
  torch::Tensor dt_bias_, A_log_, D_, norm_;  // per head (norm: per channel)
};

}  // namespace ladder::models
