// The fused CUDA kernels (kernels/cuda/launchers.h has what each computes). Row-wise kernels take
// one block per row, each thread a strided share of the row, and reduce the row's statistics with
// warp shuffles (one shared-memory step across the warps); elementwise kernels take a grid-stride
// loop. Loads and stores are in the tensors' types, arithmetic in fp32.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/launchers.h"

namespace ladder::kernels::cuda {
namespace {

constexpr int kRowThreads = 256;  // threads per row-wise block
constexpr int kWarps = kRowThreads / 32;
constexpr int kGainColumns = 256;   // columns per block of the gain-gradient reduction
constexpr int kGainRowBlock = 256;  // rows per block of the gain-gradient reduction

__device__ __forceinline__ float load(const void* p, bool bf16, int64_t i) {
  return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i])
              : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void store(void* p, bool bf16, int64_t i, float v) {
  if (bf16)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v);
  else
    static_cast<float*>(p)[i] = v;
}

// The block's sum of `v` (kRowThreads threads), returned to every thread.
__device__ float block_sum(float v) {
  __shared__ float warp_sums[kWarps];
  for (int offset = 16; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < kWarps; ++w)
    total += warp_sums[w];
  return total;
}

// Merges two running (max, sum of exp(x - max)) pairs of the online softmax (Milakov and
// Gimelshein 2018).
__device__ __forceinline__ void merge_max_sum(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2, s = s2;
    return;
  }
  const float top = fmaxf(m, m2);
  s = s * __expf(m - top) + s2 * __expf(m2 - top);
  m = top;
}

// The block's (max, sum) of the online softmax, returned to every thread.
__device__ void block_max_sum(float& m, float& s) {
  __shared__ float warp_m[kWarps], warp_s[kWarps];
  for (int offset = 16; offset > 0; offset /= 2) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    merge_max_sum(m, s, m2, s2);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) warp_m[warp] = m, warp_s[warp] = s;
  __syncthreads();
  m = -INFINITY, s = 0;
  for (int w = 0; w < kWarps; ++w)
    merge_max_sum(m, s, warp_m[w], warp_s[w]);
}

__global__ void add_rms_norm_forward_kernel(const float* residual, const void* branch,
                                            bool branch_bf16, float scale, const float* gain,
                                            float eps, int64_t n, float* sum, void* normed,
                                            bool normed_bf16, float* inv_rms) {
  const int64_t row = blockIdx.x, base = row * n;
  float squares = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    float s = residual[base + j];
    if (branch) {
      s += scale * load(branch, branch_bf16, base + j);
      sum[base + j] = s;
    }
    squares += s * s;
  }
  const float inv = rsqrtf(block_sum(squares) / static_cast<float>(n) + eps);
  const float* s = branch ? sum : residual;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
    store(normed, normed_bf16, base + j, s[base + j] * inv * gain[j]);
  if (threadIdx.x == 0) inv_rms[row] = inv;
}

__global__ void add_rms_norm_backward_kernel(const void* dy, bool dy_bf16, const float* d_sum,
                                             const float* s, const float* inv_rms,
                                             const float* gain, float scale, int64_t n,
                                             float* d_residual, void* d_branch, bool branch_bf16) {
  const int64_t row = blockIdx.x, base = row * n;
  const float inv = inv_rms[row];
  float dot = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
    dot += load(dy, dy_bf16, base + j) * gain[j] * s[base + j];
  const float correction = inv * inv * inv * block_sum(dot) / static_cast<float>(n);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    float ds = inv * load(dy, dy_bf16, base + j) * gain[j] - correction * s[base + j];
    if (d_sum) ds += d_sum[base + j];
    d_residual[base + j] = ds;
    if (d_branch) store(d_branch, branch_bf16, base + j, scale * ds);
  }
}

// partial[b, j] = sum over the rows of block b of dy[r, j] s[r, j] inv[r].
__global__ void rms_norm_gain_partial_kernel(const void* dy, bool dy_bf16, const float* s,
                                             const float* inv_rms, int64_t rows, int64_t n,
                                             float* partial) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kGainColumns + threadIdx.x;
  if (j >= n) return;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * kGainRowBlock;
  const int64_t last = first + kGainRowBlock < rows ? first + kGainRowBlock : rows;
  float acc = 0;
  for (int64_t r = first; r < last; ++r)
    acc += load(dy, dy_bf16, r * n + j) * s[r * n + j] * inv_rms[r];
  partial[blockIdx.y * n + j] = acc;
}

__global__ void swiglu_forward_kernel(const void* gate, const void* up, bool bf16, int64_t count,
                                      void* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = load(gate, bf16, i), u = load(up, bf16, i);
    const float sig = 1.0f / (1.0f + __expf(-g));
    store(out, bf16, i, g * sig * u);
  }
}

__global__ void swiglu_backward_kernel(const void* gate, const void* up, const void* dy, bool bf16,
                                       int64_t count, void* d_gate, void* d_up) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = load(gate, bf16, i), u = load(up, bf16, i), d = load(dy, bf16, i);
    const float sig = 1.0f / (1.0f + __expf(-g));
    store(d_gate, bf16, i, d * u * sig * (1.0f + g * (1.0f - sig)));
    store(d_up, bf16, i, d * g * sig);
  }
}

__global__ void rotary_kernel(const void* x, bool bf16, const float* cos, const float* sin,
                              int64_t pairs, int64_t seq, int64_t heads, int64_t half,
                              float direction, void* out) {
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < pairs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = p % half, row = p / half;  // row: (batch, position, head)
    const int64_t position = (row / heads) % seq;
    const int64_t first = row * 2 * half + i, second = first + half;
    const float c = cos[position * half + i], s = direction * sin[position * half + i];
    const float x1 = load(x, bf16, first), x2 = load(x, bf16, second);
    store(out, bf16, first, x1 * c - x2 * s);
    store(out, bf16, second, x2 * c + x1 * s);
  }
}

__global__ void cross_entropy_forward_kernel(const void* logits, bool bf16, const int64_t* targets,
                                             float scale, int64_t vocab, float* loss, float* lse) {
  const int64_t row = blockIdx.x, base = row * vocab;
  float m = -INFINITY, s = 0;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x)
    merge_max_sum(m, s, scale * load(logits, bf16, base + j), 1.0f);
  block_max_sum(m, s);
  if (threadIdx.x == 0) {
    const float log_partition = m + logf(s);
    const int64_t y = targets[row];
    lse[row] = log_partition;
    loss[row] = (y >= 0 && y < vocab) ? log_partition - scale * load(logits, bf16, base + y) : NAN;
  }
}

__global__ void cross_entropy_backward_kernel(void* logits, bool bf16, const int64_t* targets,
                                              float scale, const float* lse, const float* d_loss,
                                              const float* d_lse, int64_t vocab) {
  const int64_t row = blockIdx.x, base = row * vocab;
  const float dl = d_loss[row], total = dl + (d_lse ? d_lse[row] : 0.0f), top = lse[row];
  const int64_t y = targets[row];
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = __expf(scale * load(logits, bf16, base + j) - top);
    store(logits, bf16, base + j, scale * (p * total - (j == y ? dl : 0.0f)));
  }
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}

cudaStream_t as_stream(void* stream) {
  return static_cast<cudaStream_t>(stream);
}

int elementwise_blocks(int64_t count) {
  const int64_t blocks = (count + kRowThreads - 1) / kRowThreads;
  return static_cast<int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace

void add_rms_norm_forward(const float* residual, const void* branch, bool branch_bf16, float scale,
                          const float* gain, float eps, int64_t rows, int64_t n, float* sum,
                          void* normed, bool normed_bf16, float* inv_rms, void* stream) {
  if (rows == 0) return;
  add_rms_norm_forward_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, as_stream(stream)>>>(
      residual, branch, branch_bf16, scale, gain, eps, n, sum, normed, normed_bf16, inv_rms);
  check_launch("add_rms_norm_forward");
}

int64_t rms_norm_gain_row_blocks(int64_t rows) {
  return rows > 0 ? (rows + kGainRowBlock - 1) / kGainRowBlock : 1;
}

void add_rms_norm_backward(const void* dy, bool dy_bf16, const float* d_sum, const float* s,
                           const float* inv_rms, const float* gain, float scale, int64_t rows,
                           int64_t n, float* d_residual, void* d_branch, bool branch_bf16,
                           float* d_gain_partial, int64_t gain_row_blocks, void* stream) {
  if (rows == 0) return;
  add_rms_norm_backward_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, as_stream(stream)>>>(
      dy, dy_bf16, d_sum, s, inv_rms, gain, scale, n, d_residual, d_branch, branch_bf16);
  check_launch("add_rms_norm_backward");
  if (d_gain_partial) {
    const dim3 grid(static_cast<unsigned>((n + kGainColumns - 1) / kGainColumns),
                    static_cast<unsigned>(gain_row_blocks));
    rms_norm_gain_partial_kernel<<<grid, kGainColumns, 0, as_stream(stream)>>>(
        dy, dy_bf16, s, inv_rms, rows, n, d_gain_partial);
    check_launch("rms_norm_gain_partial");
  }
}

void swiglu_forward(const void* gate, const void* up, bool bf16, int64_t count, void* out,
                    void* stream) {
  if (count == 0) return;
  swiglu_forward_kernel<<<elementwise_blocks(count), kRowThreads, 0, as_stream(stream)>>>(
      gate, up, bf16, count, out);
  check_launch("swiglu_forward");
}

void swiglu_backward(const void* gate, const void* up, const void* dy, bool bf16, int64_t count,
                     void* d_gate, void* d_up, void* stream) {
  if (count == 0) return;
  swiglu_backward_kernel<<<elementwise_blocks(count), kRowThreads, 0, as_stream(stream)>>>(
      gate, up, dy, bf16, count, d_gate, d_up);
  check_launch("swiglu_backward");
}

void rotary(const void* x, bool bf16, const float* cos, const float* sin, int64_t batch,
            int64_t seq, int64_t heads, int64_t head_dim, int direction, void* out, void* stream) {
  const int64_t half = head_dim / 2, pairs = batch * seq * heads * half;
  if (pairs == 0) return;
  rotary_kernel<<<elementwise_blocks(pairs), kRowThreads, 0, as_stream(stream)>>>(
      x, bf16, cos, sin, pairs, seq, heads, half, static_cast<float>(direction), out);
  check_launch("rotary");
}

void cross_entropy_forward(const void* logits, bool bf16, const int64_t* targets, float scale,
                           int64_t rows, int64_t vocab, float* loss, float* lse, void* stream) {
  if (rows == 0) return;
  cross_entropy_forward_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, as_stream(stream)>>>(
      logits, bf16, targets, scale, vocab, loss, lse);
  check_launch("cross_entropy_forward");
}

void cross_entropy_backward_in_place(void* logits, bool bf16, const int64_t* targets, float scale,
                                     const float* lse, const float* d_loss, const float* d_lse,
                                     int64_t rows, int64_t vocab, void* stream) {
  if (rows == 0) return;
  cross_entropy_backward_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, as_stream(stream)>>>(
      logits, bf16, targets, scale, lse, d_loss, d_lse, vocab);
  check_launch("cross_entropy_backward");
}

}  // namespace ladder::kernels::cuda
