// The few vector helpers every kernel shares: loads and stores between a tensor's storage type
// (fp32, bf16, fp64) and its arithmetic type (fp32 for fp32 and bf16, fp64 for fp64), in whole
// vectors of LibTorch's at::vec::Vectorized or a shorter tail, so that one loop body serves
// sizes that are not multiples of the vector width.
//
// Included only by the loop files of kernels/cpu/, which are compiled once per instruction set with
// LADDER_ISA naming it (avx2, avx512) and at::vec's CPU_CAPABILITY set to match: everything here
// lives in namespace ladder::kernels::cpu::LADDER_ISA, so the two builds never share a symbol.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/loops.h"

namespace ladder::kernels::cpu::LADDER_ISA {

template <typename T>
using Vec = at::vec::Vectorized<acc_t<T>>;
template <typename T>
constexpr int64_t kWidth = Vec<T>::size();

// Loads min(n, width) elements from p into the arithmetic type; a short tail is zero-filled.
template <typename T>
inline Vec<T> load_vec(const T* p, int64_t n = kWidth<T>) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    if (n >= kWidth<T>) {
      Vec<T> out;
      at::vec::load_to_float(p, out);
      return out;
    }
    float tail[kWidth<T>] = {};
    for (int64_t i = 0; i < n; ++i)
      tail[i] = static_cast<float>(p[i]);
    return Vec<T>::loadu(tail);
  } else {
    return n >= kWidth<T> ? Vec<T>::loadu(p) : Vec<T>::loadu(p, n);
  }
}

// Stores min(n, width) elements of v to p, rounding to the storage type (to nearest even for bf16).
template <typename T>
inline void store_vec(T* p, const Vec<T>& v, int64_t n = kWidth<T>) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    // One vector's fp32 -> bf16 rounding (at::vec's own, to nearest even); at::vec::convert would
    // round 8 or 16 values one at a time (its vector loop takes two vectors).
#if defined(CPU_CAPABILITY_AVX512)
    const __m256i rounded = at::vec::cvtfp32_bf16(__m512(v));
#else
    const __m128i rounded = at::vec::cvtfp32_bf16(__m256(v));
#endif
    if (n >= kWidth<T>) {
      std::memcpy(p, &rounded, sizeof(rounded));
      return;
    }
    c10::BFloat16 staged[kWidth<T>];
    std::memcpy(staged, &rounded, sizeof(rounded));
    std::copy(staged, staged + n, p);
  } else {
    v.store(p, std::min<int64_t>(n, kWidth<T>));
  }
}

// Calls body(i, n) over [0, size) in steps of the vector width: n = width, then the tail.
template <typename T, typename Body>
inline void for_each_vector(int64_t size, Body&& body) {
  for (int64_t i = 0; i < size; i += kWidth<T>)
    body(i, std::min<int64_t>(kWidth<T>, size - i));
}

// The sum of a vector's lanes (partial lanes of a zero-filled tail add nothing).
template <typename A>
inline A lane_sum(const at::vec::Vectorized<A>& v) {
  return at::vec::vec_reduce_all<A>([](auto a, auto b) { return a + b; }, v);
}

}  // namespace ladder::kernels::cpu::LADDER_ISA
