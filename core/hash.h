// Small, stable hash functions. Data order, the train/validation split and tokenizer identities
// depend on them, so they must never change: a change would silently reorder every dataset.
#pragma once

#include <cstdint>
#include <string_view>

namespace ladder {

// SplitMix64's finaliser (Steele, Lea and Flood 2014): a bijective 64-bit mixer.
constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Hash of several 64-bit words, order-sensitive.
constexpr uint64_t hash_words(uint64_t a, uint64_t b) {
  return splitmix64(a ^ splitmix64(b));
}
constexpr uint64_t hash_words(uint64_t a, uint64_t b, uint64_t c) {
  return hash_words(hash_words(a, b), c);
}

// 64-bit FNV-1a of a byte string.
constexpr uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace ladder
