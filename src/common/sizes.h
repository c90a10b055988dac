// Byte sizes as people write them: "4GiB", "300MiB", "1.5G", "65536".
#pragma once
#include <cstdint>
#include <string>

namespace lw {

// Throws lw::Error on anything that is not a positive size.
uint64_t parse_size(const std::string& text);
// "1.50 GiB", "300.0 MiB", "512 B"; kSizeOverflow is "over 16 EiB (2^64 bytes)".
std::string format_size(uint64_t bytes);

// Sizes computed from untrusted numbers (a --batch of 10^8, a hostile config) saturate here
// rather than wrap around to something small.
inline constexpr uint64_t kSizeOverflow = UINT64_MAX;
inline uint64_t size_add(uint64_t a, uint64_t b) {
  uint64_t sum = 0;
  return __builtin_add_overflow(a, b, &sum) ? kSizeOverflow : sum;
}
inline uint64_t size_mul(uint64_t a, uint64_t b) {
  uint64_t product = 0;
  return __builtin_mul_overflow(a, b, &product) ? kSizeOverflow : product;
}

}  // namespace lw
