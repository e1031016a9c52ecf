// The CUDA kernels of kernels/cuda/kernels.cu, as plain launchers: raw pointers, sizes and the
// caller's stream, so that nvcc never compiles LibTorch's headers (kernels/cuda.cpp wraps them in
// autograd functions). Row-wise kernels take contiguous rows. Every type is fp32 or bf16 (`bf16`
// flags); statistics and arithmetic are fp32. Each launcher enqueues on `stream` (a cudaStream_t)
// and returns without waiting; a launch error is thrown as std::runtime_error.
#pragma once

#include <cstdint>

namespace ladder::kernels::cuda {

// s = residual + scale x branch (branch optional: then s = residual, `sum` unused),
// normed = s / sqrt(mean(s^2) + eps) x gain; inv_rms[row] = 1 / sqrt(mean(s^2) + eps).
// residual, sum, gain, inv_rms fp32; branch fp32 or bf16; normed fp32 or bf16.
void add_rms_norm_forward(const float* residual, const void* branch, bool branch_bf16, float scale,
                          const float* gain, float eps, int64_t rows, int64_t n, float* sum,
                          void* normed, bool normed_bf16, float* inv_rms, void* stream);
// d s = inv dy g - inv^3 s (sum_k dy_k g_k s_k) / n + d_sum (d_sum optional: the gradient that
// reaches s from its other use, the residual stream), written to d_residual (fp32) and, when
// d_branch is given, scale x d s to d_branch (fp32 or bf16); d_gain_partial [blocks_of_rows, n]
// (fp32) the sums over each block of rows of dy s inv, for the caller to sum.
void add_rms_norm_backward(const void* dy, bool dy_bf16, const float* d_sum, const float* s,
                           const float* inv_rms, const float* gain, float scale, int64_t rows,
                           int64_t n, float* d_residual, void* d_branch, bool branch_bf16,
                           float* d_gain_partial, int64_t gain_row_blocks, void* stream);
// The row blocks add_rms_norm_backward's d_gain_partial has for `rows`.
int64_t rms_norm_gain_row_blocks(int64_t rows);

// out = silu(gate) x up; d gate = dy up s (1 + g (1 - s)), d up = dy g s (s = sigmoid(g)).
void swiglu_forward(const void* gate, const void* up, bool bf16, int64_t count, void* out,
                    void* stream);
void swiglu_backward(const void* gate, const void* up, const void* dy, bool bf16, int64_t count,
                     void* d_gate, void* d_up, void* stream);

// The rotary embedding of x [batch, seq, heads, head_dim] (fp32 or bf16) in the half-split layout
// (kernels/rotary.h), the pair (i, i + head_dim / 2) of position p turned by direction x angle(p,
// i): cos and sin [>= seq, head_dim / 2] fp32. direction -1 is the backward pass.
void rotary(const void* x, bool bf16, const float* cos, const float* sin, int64_t batch,
            int64_t seq, int64_t heads, int64_t head_dim, int direction, void* out, void* stream);

// Per row of logits [rows, vocab] (fp32 or bf16), z = scale x logits: lse = log sum exp z and
// loss = lse - z[target] (fp32); a target outside [0, vocab) gives a NaN loss.
void cross_entropy_forward(const void* logits, bool bf16, const int64_t* targets, float scale,
                           int64_t rows, int64_t vocab, float* loss, float* lse, void* stream);
// Overwrites the logits with their gradient: scale x (softmax(z) (d_loss + d_lse) - [j = target]
// d_loss), in the logits' type; d_lse optional (no z-loss).
void cross_entropy_backward_in_place(void* logits, bool bf16, const int64_t* targets, float scale,
                                     const float* lse, const float* d_loss, const float* d_lse,
                                     int64_t rows, int64_t vocab, void* stream);

}  // namespace ladder::kernels::cuda
