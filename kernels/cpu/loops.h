// The vectorised CPU loops behind the fused kernels (kernels/*.h), on raw contiguous storage. They
// are compiled for AVX2 + FMA (kernels/CMakeLists.txt) and called only where
// kernels::cpu_has_avx2() says the CPU runs them; everything else about a kernel (shapes, dtypes,
// autograd) lives in its kernels/<name>.cpp, compiled for the baseline ISA like the rest of ladder.
//
// Element types: T is the storage type of activations (float, c10::BFloat16 or double) and A =
// acc_t<T> its arithmetic type (float, float, double); gains, tables and statistics are in A.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <type_traits>

namespace ladder::kernels::cpu {

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// --- RMSNorm with the residual add (kernels/rms_norm.h) -------------------------------------
// Per row of n: s = residual + scale x branch (branch may be null: s = residual), inv = 1 /
// sqrt(mean(s^2) + eps), normed = s x inv x gain. sum may be null when branch is (s is residual).
template <typename T, typename B>
void add_rms_norm_forward(const T* residual, const B* branch, double scale, const acc_t<T>* gain,
                          int64_t rows, int64_t n, double eps, T* sum, acc_t<T>* normed,
                          acc_t<T>* inv_rms);
// Given d normed and d sum (may be null): d residual = d sum + d s, d branch = scale x that (may be
// null), d gain accumulated over rows (overwritten).
template <typename T, typename B>
void add_rms_norm_backward(const T* sum, const acc_t<T>* inv_rms, const acc_t<T>* gain,
                           const acc_t<T>* grad_normed, const T* grad_sum, double scale,
                           int64_t rows, int64_t n, T* grad_residual, B* grad_branch,
                           acc_t<T>* grad_gain);

// --- Rotary embedding of q and k (kernels/rotary.h) -----------------------------------------
// x: [rows = batch x seq, heads, head_dim] with row r at position r % seq; cos, sin: [>= seq,
// head_dim / 2]. out = the half-split rotation by +angle (direction +1) or -angle (-1, the
// backward pass).
template <typename T>
void rotary(const T* x, const float* cos, const float* sin, int64_t rows, int64_t seq,
            int64_t heads, int64_t head_dim, int direction, T* out);

// --- SwiGLU (kernels/swiglu.h) ---------------------------------------------------------------
template <typename T>
void swiglu_forward(const T* gate, const T* up, int64_t size, T* out);
template <typename T>
void swiglu_backward(const T* gate, const T* up, const T* grad_out, int64_t size, T* grad_gate,
                     T* grad_up);

// --- Cross-entropy of one chunk of logits (kernels/cross_entropy.h) ----------------------------
// logits: [rows, vocab] (T), scaled by `scale` before the softmax. Forward: lse and loss =
// lse - logit[target] per row (fp32, or fp64 for fp64 logits).
template <typename T>
void cross_entropy_forward(const T* logits, const int64_t* targets, int64_t rows, int64_t vocab,
                           double scale, acc_t<T>* loss, acc_t<T>* lse);
// Overwrites the logits with d logits = scale x (softmax x (g_loss + g_lse) - onehot x g_loss).
template <typename T>
void cross_entropy_backward(T* logits, const int64_t* targets, const acc_t<T>* lse,
                            const acc_t<T>* grad_loss, const acc_t<T>* grad_lse, int64_t rows,
                            int64_t vocab, double scale);

// --- AdamW (kernels/adamw.h) -----------------------------------------------------------------
struct AdamWScalars {
  float beta1, beta2;
  float step_size;   // lr / (1 - beta1^t)
  float decay;       // 1 - lr x weight_decay
  float bias2_sqrt;  // sqrt(1 - beta2^t)
  float eps;
};
void adamw(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t size,
           const AdamWScalars& s);

}  // namespace ladder::kernels::cpu
