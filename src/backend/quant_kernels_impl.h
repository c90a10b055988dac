// The body of the integer products (quant_kernels.h), written once and compiled by each
// quant_kernels_<level>.cpp with that level's flags. Internal linkage only, as in
// cpu_kernels_impl.h (no standard-library templates: an inline template instantiated under
// -mavx512f could be merged by the linker into code that runs on CPUs without it; the templates
// below are our own, in an anonymous namespace). Include only from quant_kernels_<level>.cpp.
//
// Every dot computes, for each 32 activations j (one activation scale dx_j), an exact integer
//   I_j = sum over the 16-element sub-blocks h of j of  scale_h * sum_i w_i * q_i
// (w the weight's integer quant with its offset applied: nibble - 8, q - 32, an IQ4 level, ...;
// scale_h the sub-block's integer scale, 1 for the 32-element types), and, for the types with
// minimums, M_j = sum_h min_h * sums_h. The row's product is then the float32 sum over j of
//   dx_j * d * I_j  -  dx_j * dmin * M_j
// (d, dmin the weight block's float16 scales; Q4_1 / Q5_1 add m: dmin = -m, min_h = 1). |I_j| <
// 2^24, so I_j is exact in float32 too. Levels differ only in how they order the float sums.
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "backend/quant_kernels.h"

namespace lw::cpu {
namespace {

using u8 = uint8_t;

inline uint16_t load_u16(const u8* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline uint32_t load_u32(const u8* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline float load_f16(const u8* p) {
#if defined(__F16C__)
  return _cvtsh_ss(load_u16(p));
#else
  return f16_to_f32(load_u16(p));
#endif
}

constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// The eight six-bit scales and mins of Q4_K / Q5_K, packed in 12 bytes.
inline void unpack_k4_scales(const u8* s, int32_t* sc, int32_t* mn) {
  for (int i = 0; i < 4; i++) {
    sc[i] = s[i] & 0x3F;
    mn[i] = s[i + 4] & 0x3F;
    sc[i + 4] = (s[i + 8] & 0x0F) | ((s[i] >> 2) & 0x30);
    mn[i + 4] = (s[i + 8] >> 4) | ((s[i + 4] >> 2) & 0x30);
  }
}

// The sixteen six-bit scales of Q3_K (12 bytes), offset 32 removed.
inline void unpack_q3_k_scales(const u8* sc, int8_t* out) {
  for (int i = 0; i < 16; i++) {
    const int low = i < 8 ? (sc[i] & 0x0F) : (sc[i - 8] >> 4);
    const int high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
    out[i] = static_cast<int8_t>((low | (high << 4)) - 32);
  }
}

// The eight scales of IQ4_XS, offset 32 removed.
inline void unpack_iq4_xs_scales(const u8* b, int32_t* out) {
  const int scales_h = b[2] | (b[3] << 8);
  for (int s = 0; s < 8; s++) {
    const int low = (b[4 + s / 2] >> (4 * (s % 2))) & 0x0F;
    const int high = (scales_h >> (2 * s)) & 3;
    out[s] = (low | (high << 4)) - 32;
  }
}

#if defined(__AVX2__)
// ------------------------------------------------------------------------------------------
// AVX2 (also the AVX-512 level, compiled with the AVX2 flags as well)

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m128i load16(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// 16 bytes of nibbles as 32 values: the low nibbles (elements 0..15), then the high ones.
inline __m256i nibbles32(const u8* qs) {
  const __m128i v = load16(qs), mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(v, mask), hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

// Byte j = 0xFF where bit j of the 32 bits at p is set, else 0.
inline __m256i bits32(const u8* p) {
  const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(load_u32(p))),
                                        _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i all_but_bit = _mm256_set1_epi64x(0x7FBFDFEFF7FBFDFE);
  return _mm256_cmpeq_epi8(_mm256_or_si256(v, all_but_bit), _mm256_set1_epi64x(-1));
}

// Sums of adjacent products as 16 int16: signed weights (|w| <= 128) and unsigned (w <= 127).
inline __m256i products_signed(__m256i w, __m256i a) {
  return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}
inline __m256i products_unsigned(__m256i w, __m256i a) { return _mm256_maddubs_epi16(w, a); }

// The 8 int32 products of a 32-element chunk, summed in pairs, as floats.
inline __m256 chunk_sum(__m256i products16) {
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(products16, _mm256_set1_epi16(1)));
}

// 16 int32 per-16 sums -> 8 per-32 sums, in order.
inline __m256i pair_sums(const int32_t* sums16) {
  const __m256i h = _mm256_hadd_epi32(load32(sums16), load32(sums16 + 8));
  return _mm256_permute4x64_epi64(h, 0xD8);
}

// Sixteen int8 sub-block scales (one per 16 elements) as int16, sub-blocks 0..7 in both halves
// of halves[0], 8..15 in both halves of halves[1].
struct SubScales {
  __m256i halves[2];
  explicit SubScales(__m128i scales8) {
    const __m256i wide = _mm256_cvtepi8_epi16(scales8);
    halves[0] = _mm256_permute2x128_si256(wide, wide, 0x00);
    halves[1] = _mm256_permute2x128_si256(wide, wide, 0x11);
  }
  // Chunk c (elements 32c .. 32c+31): sub-block 2c's scale in the low 128 bits (the products of
  // elements 0..15), 2c+1's in the high.
  __m256i chunk(int c) const {
    const int k = c % 4;
    const __m256i pick = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(static_cast<short>((4 * k) | ((4 * k + 1) << 8)))),
                                                 _mm_set1_epi16(static_cast<short>((4 * k + 2) | ((4 * k + 3) << 8))), 1);
    return _mm256_shuffle_epi8(halves[c / 4], pick);
  }
};

// Per chunk c (8 lanes): v[2c] * sums[2c] + v[2c+1] * sums[2c+1], v 16 int8 per 16 elements.
inline __m256 scaled_sums(__m128i v8, const int32_t* sums16) {
  const __m256i lo = _mm256_mullo_epi32(_mm256_cvtepi8_epi32(v8), load32(sums16));
  const __m256i hi = _mm256_mullo_epi32(_mm256_cvtepi8_epi32(_mm_srli_si128(v8, 8)), load32(sums16 + 8));
  return _mm256_cvtepi32_ps(_mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), 0xD8));
}

// ---- 32-element blocks ----
// Each type: kBytes, kSigned (weights signed: sign trick), kMin (adds m * sum of activations),
// kOffset (unsigned weights w stand for w + kOffset: adds kOffset * d * sum of activations),
// weights(block) as 32 int8; d is the float16 at 0, m (kMin) the one at 2.

struct Q8_0 {
  static constexpr int kBytes = 34, kOffset = 0;
  static constexpr bool kSigned = true, kMin = false;
  static __m256i weights(const u8* b) { return load32(b + 2); }
};
struct Q4_0 {  // nibble - 8: the nibbles, and -8 times the sum of the activations
  static constexpr int kBytes = 18, kOffset = -8;
  static constexpr bool kSigned = false, kMin = false;
  static __m256i weights(const u8* b) { return nibbles32(b + 2); }
};
struct Q4_1 {
  static constexpr int kBytes = 20, kOffset = 0;
  static constexpr bool kSigned = false, kMin = true;
  static __m256i weights(const u8* b) { return nibbles32(b + 4); }
};
struct Q5_0 {  // (nibble | 16 * bit) - 16
  static constexpr int kBytes = 22, kOffset = -16;
  static constexpr bool kSigned = false, kMin = false;
  static __m256i weights(const u8* b) {
    return _mm256_or_si256(nibbles32(b + 6), _mm256_and_si256(bits32(b + 2), _mm256_set1_epi8(0x10)));
  }
};
struct Q5_1 {
  static constexpr int kBytes = 24, kOffset = 0;
  static constexpr bool kSigned = false, kMin = true;
  static __m256i weights(const u8* b) {
    return _mm256_or_si256(nibbles32(b + 8), _mm256_and_si256(bits32(b + 4), _mm256_set1_epi8(0x10)));
  }
};
struct IQ4_NL {
  static constexpr int kBytes = 18, kOffset = 0;
  static constexpr bool kSigned = true, kMin = false;
  static __m256i weights(const u8* b) {
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(load16(kIq4Levels)), nibbles32(b + 2));
  }
};

template <class T>
inline void block32(const u8* b, const int8_t* a, const float* coef, __m256& acc) {
  const __m256i w = T::weights(b), v = load32(a);
  const __m256i p = T::kSigned ? products_signed(w, v) : products_unsigned(w, v);
  acc = _mm256_fmadd_ps(chunk_sum(p), _mm256_broadcast_ss(coef), acc);
}

// The float16 at `offset` of four consecutive blocks, as floats times dx of those blocks.
template <class T>
inline __m128 four_scales(const u8* b, int offset, const float* dx) {
  uint64_t halves = 0;
  for (int k = 0; k < 4; k++) halves |= static_cast<uint64_t>(load_u16(b + k * T::kBytes + offset)) << (16 * k);
  return _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(halves))), _mm_loadu_ps(dx));
}

// Blocks in fours: their d * dx formed together (one conversion), then broadcast from memory;
// for the types with a minimum, m * dx * (sum of the block's activations) in a vector of four.
template <class T>
float dot32(const void* row, const QuantizedActivations& x, int64_t n) {
  const u8* b = static_cast<const u8*>(row);
  const int64_t blocks = n / 32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  __m128 mins = _mm_setzero_ps();
  int64_t j = 0;
  for (; j + 4 <= blocks; j += 4) {
    const u8* p = b + j * T::kBytes;
    const int8_t* a = x.q + j * 32;
    alignas(16) float coef[4];
    _mm_store_ps(coef, four_scales<T>(p, 0, x.scales + j));
    if constexpr (T::kMin || T::kOffset != 0) {
      const __m128 s = _mm_cvtepi32_ps(_mm_hadd_epi32(load16(x.sums + 2 * j), load16(x.sums + 2 * j + 4)));
      if constexpr (T::kMin) mins = _mm_fmadd_ps(four_scales<T>(p, 2, x.scales + j), s, mins);
      if constexpr (T::kOffset != 0)
        mins = _mm_fmadd_ps(_mm_mul_ps(_mm_load_ps(coef), _mm_set1_ps(static_cast<float>(T::kOffset))), s, mins);
    }
    block32<T>(p, a, coef, acc0);
    block32<T>(p + T::kBytes, a + 32, coef + 1, acc1);
    block32<T>(p + 2 * T::kBytes, a + 64, coef + 2, acc2);
    block32<T>(p + 3 * T::kBytes, a + 96, coef + 3, acc3);
  }
  float tail = 0;
  for (; j < blocks; j++) {
    const u8* p = b + j * T::kBytes;
    const float dx = x.scales[j], coef = load_f16(p) * dx;
    block32<T>(p, x.q + j * 32, &coef, acc0);
    const float sum = static_cast<float>(x.sums[2 * j] + x.sums[2 * j + 1]);
    if constexpr (T::kMin) tail = std::fma(load_f16(p + 2) * dx, sum, tail);
    if constexpr (T::kOffset != 0) tail = std::fma(coef * static_cast<float>(T::kOffset), sum, tail);
  }
  __m128 m = _mm_add_ps(mins, _mm_movehl_ps(mins, mins));
  m = _mm_add_ss(m, _mm_movehdup_ps(m));
  return hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3))) + (_mm_cvtss_f32(m) + tail);
}

float dot_q8_0(const void* row, const QuantizedActivations& x, int64_t n) { return dot32<Q8_0>(row, x, n); }
float dot_q4_0(const void* row, const QuantizedActivations& x, int64_t n) { return dot32<Q4_0>(row, x, n); }
float dot_q4_1(const void* row, const QuantizedActivations& x, int64_t n) { return dot32<Q4_1>(row, x, n); }
float dot_q5_0(const void* row, const QuantizedActivations& x, int64_t n) { return dot32<Q5_0>(row, x, n); }
float dot_q5_1(const void* row, const QuantizedActivations& x, int64_t n) { return dot32<Q5_1>(row, x, n); }
float dot_iq4_nl(const void* row, const QuantizedActivations& x, int64_t n) { return dot32<IQ4_NL>(row, x, n); }

// ---- 256-element superblocks ----
// Four float accumulators, chunk c (32 elements) into acc[c % 4]; coef[c] = d * dx_c (times the
// chunk's scale where it is one per 32 and not applied in the integers).

struct Accumulators {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, mins = a0;
  float sum() const { return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) - hsum(mins); }
};

inline void add_chunk(Accumulators& acc, int c, __m256i products32, const float* coef) {
  const __m256 v = _mm256_cvtepi32_ps(products32), k = _mm256_broadcast_ss(coef + c);
  switch (c & 3) {
    case 0: acc.a0 = _mm256_fmadd_ps(v, k, acc.a0); break;
    case 1: acc.a1 = _mm256_fmadd_ps(v, k, acc.a1); break;
    case 2: acc.a2 = _mm256_fmadd_ps(v, k, acc.a2); break;
    default: acc.a3 = _mm256_fmadd_ps(v, k, acc.a3); break;
  }
}

float dot_q2_k(const void* row, const QuantizedActivations& x, int64_t n) {
  const u8* base = static_cast<const u8*>(row);
  Accumulators acc;
  const __m256i low2 = _mm256_set1_epi8(3);
  for (int64_t sb = 0; sb < n / 256; sb++) {
    const u8* b = base + sb * 84;
    const int8_t* a = x.q + sb * 256;
    const __m256 dx = _mm256_loadu_ps(x.scales + sb * 8);
    alignas(32) float coef[8];
    _mm256_store_ps(coef, _mm256_mul_ps(_mm256_set1_ps(load_f16(b + 80)), dx));
    const __m128i packed = load16(b);
    const __m128i scales = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
    const __m128i mins = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F));
    const SubScales sub(scales);
    acc.mins = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(load_f16(b + 82)), scaled_sums(mins, x.sums + sb * 16)), dx, acc.mins);
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++) {
      const __m256i q = load32(b + 16 + 32 * g);
#pragma GCC unroll 4
      for (int s = 0; s < 4; s++) {
        const int c = 4 * g + s;
        const __m256i w = _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), low2);
        const __m256i p = products_unsigned(w, load32(a + 32 * c));
        add_chunk(acc, c, _mm256_madd_epi16(p, sub.chunk(c)), coef);
      }
    }
  }
  return acc.sum();
}

// Q3_K's sixteen scales (offset 32 removed) as int8: low four bits from bytes 0..7 (low nibbles
// for 0..7, high for 8..15), two high bits from bytes 8..11 (scale 4k + r: bits 2k of byte 8 + r).
inline __m128i q3_k_scales(const u8* sc) {
  uint64_t low;
  std::memcpy(&low, sc, 8);
  const uint32_t h = load_u32(sc + 8), m2 = 0x03030303u;
  const uint64_t high0 = (h & m2) | (static_cast<uint64_t>((h >> 2) & m2) << 32);
  const uint64_t high1 = ((h >> 4) & m2) | (static_cast<uint64_t>((h >> 6) & m2) << 32);
  const uint64_t nibbles = 0x0F0F0F0F0F0F0F0Full;
  const uint64_t s0 = (low & nibbles) | (high0 << 4), s1 = ((low >> 4) & nibbles) | (high1 << 4);
  return _mm_sub_epi8(_mm_set_epi64x(static_cast<long long>(s1), static_cast<long long>(s0)), _mm_set1_epi8(32));
}

float dot_q3_k(const void* row, const QuantizedActivations& x, int64_t n) {
  const u8* base = static_cast<const u8*>(row);
  Accumulators acc;
  const __m256i low2 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  for (int64_t sb = 0; sb < n / 256; sb++) {
    const u8* b = base + sb * 110;
    const int8_t* a = x.q + sb * 256;
    alignas(32) float coef[8];
    const __m256 coefs = _mm256_mul_ps(_mm256_set1_ps(load_f16(b + 108)), _mm256_loadu_ps(x.scales + sb * 8));
    _mm256_store_ps(coef, coefs);
    const __m128i scales = q3_k_scales(b + 96);
    const SubScales sub(scales);
    // low | 4 * bit, minus 4: the unsigned part in the integers, -4 * scale * sums in acc.mins
    acc.mins = _mm256_fmadd_ps(_mm256_mul_ps(scaled_sums(scales, x.sums + sb * 16), _mm256_set1_ps(4)), coefs, acc.mins);
    __m256i hm = load32(b);  // bit c of byte j, for chunk c: shifted down one chunk at a time
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++) {
      const __m256i q = load32(b + 32 + 32 * g);
#pragma GCC unroll 4
      for (int s = 0; s < 4; s++) {
        const int c = 4 * g + s;
        const __m256i high = _mm256_slli_epi16(_mm256_and_si256(hm, one), 2);
        hm = _mm256_srli_epi16(hm, 1);
        const __m256i w = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * s), low2), high);
        const __m256i p = products_unsigned(w, load32(a + 32 * c));
        add_chunk(acc, c, _mm256_madd_epi16(p, sub.chunk(c)), coef);
      }
    }
  }
  return acc.sum();
}

// Q4_K / Q5_K: per-32 scales go into coef, the mins into acc.mins.
// The 12 bytes of six-bit scales and mins as 8 bytes each, four at a time in 32-bit words (as
// unpack_k4_scales: bits 6..7 of bytes 0..7 are the high bits of scales and mins 4..7).
inline void unpack_k4_scales_bytes(const u8* s, uint64_t& sc, uint64_t& mn) {
  const uint32_t u0 = load_u32(s), u1 = load_u32(s + 4), u2 = load_u32(s + 8);
  const uint32_t sc_high = (u2 & 0x0F0F0F0Fu) | ((u0 >> 2) & 0x30303030u);
  const uint32_t mn_high = ((u2 >> 4) & 0x0F0F0F0Fu) | ((u1 >> 2) & 0x30303030u);
  sc = (u0 & 0x3F3F3F3Fu) | (static_cast<uint64_t>(sc_high) << 32);
  mn = (u1 & 0x3F3F3F3Fu) | (static_cast<uint64_t>(mn_high) << 32);
}

inline void k4_scales(const u8* b, const QuantizedActivations& x, int64_t sb, float* coef, Accumulators& acc) {
  uint64_t sc, mn;
  unpack_k4_scales_bytes(b + 4, sc, mn);
  const __m256 dx = _mm256_loadu_ps(x.scales + sb * 8);
  const __m256i sc32 = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(sc)));
  const __m256i mn32 = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(mn)));
  _mm256_store_ps(coef, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(load_f16(b)), _mm256_cvtepi32_ps(sc32)), dx));
  const __m256i m32 = _mm256_mullo_epi32(mn32, pair_sums(x.sums + sb * 16));
  acc.mins = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(load_f16(b + 2)), _mm256_cvtepi32_ps(m32)), dx, acc.mins);
}

float dot_q4_k(const void* row, const QuantizedActivations& x, int64_t n) {
  const u8* base = static_cast<const u8*>(row);
  Accumulators acc;
  const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  for (int64_t sb = 0; sb < n / 256; sb++) {
    const u8* b = base + sb * 144;
    const int8_t* a = x.q + sb * 256;
    alignas(32) float coef[8];
    k4_scales(b, x, sb, coef, acc);
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
      const __m256i q = load32(b + 16 + 32 * g);
      const __m256i p0 = products_unsigned(_mm256_and_si256(q, low4), load32(a + 64 * g));
      const __m256i p1 = products_unsigned(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4), load32(a + 64 * g + 32));
      add_chunk(acc, 2 * g, _mm256_madd_epi16(p0, ones), coef);
      add_chunk(acc, 2 * g + 1, _mm256_madd_epi16(p1, ones), coef);
    }
  }
  return acc.sum();
}

float dot_q5_k(const void* row, const QuantizedActivations& x, int64_t n) {
  const u8* base = static_cast<const u8*>(row);
  Accumulators acc;
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1), ones = _mm256_set1_epi16(1);
  for (int64_t sb = 0; sb < n / 256; sb++) {
    const u8* b = base + sb * 176;
    const int8_t* a = x.q + sb * 256;
    alignas(32) float coef[8];
    k4_scales(b, x, sb, coef, acc);
    __m256i h = load32(b + 16);  // bit c of byte j, for chunk c: shifted down one chunk at a time
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
      const __m256i q = load32(b + 48 + 32 * g);
      const __m256i w0 = _mm256_or_si256(_mm256_and_si256(q, low4), _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
      h = _mm256_srli_epi16(h, 1);
      const __m256i w1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4), _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
      h = _mm256_srli_epi16(h, 1);
      add_chunk(acc, 2 * g, _mm256_madd_epi16(products_unsigned(w0, load32(a + 64 * g)), ones), coef);
      add_chunk(acc, 2 * g + 1, _mm256_madd_epi16(products_unsigned(w1, load32(a + 64 * g + 32)), ones), coef);
    }
  }
  return acc.sum();
}

float dot_q6_k(const void* row, const QuantizedActivations& x, int64_t n) {
  const u8* base = static_cast<const u8*>(row);
  Accumulators acc;
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(3);
  for (int64_t sb = 0; sb < n / 256; sb++) {
    const u8* b = base + sb * 210;
    const int8_t* a = x.q + sb * 256;
    alignas(32) float coef[8];
    const __m256 coefs = _mm256_mul_ps(_mm256_set1_ps(load_f16(b + 208)), _mm256_loadu_ps(x.scales + sb * 8));
    _mm256_store_ps(coef, coefs);
    const __m128i scales = load16(b + 192);
    const SubScales sub(scales);
    // q - 32: q in the integers, -32 * scale * sums in acc.mins
    acc.mins = _mm256_fmadd_ps(_mm256_mul_ps(scaled_sums(scales, x.sums + sb * 16), _mm256_set1_ps(32)), coefs, acc.mins);
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++) {
      const __m256i l0 = load32(b + 64 * g), l1 = load32(b + 64 * g + 32), hb = load32(b + 128 + 32 * g);
      const __m256i low[4] = {_mm256_and_si256(l0, low4), _mm256_and_si256(l1, low4),
                              _mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_and_si256(_mm256_srli_epi16(l1, 4), low4)};
#pragma GCC unroll 4
      for (int k = 0; k < 4; k++) {  // elements 128g + 32k: high bits at 2k of qh
        const int c = 4 * g + k;
        const __m256i high = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * k), low2), 4);
        const __m256i p = products_unsigned(_mm256_or_si256(low[k], high), load32(a + 32 * c));
        add_chunk(acc, c, _mm256_madd_epi16(p, sub.chunk(c)), coef);
      }
    }
  }
  return acc.sum();
}

// IQ4_XS's eight scales (offset 32 removed) as 8 int32: low nibbles from scales_l, two high bits
// each from scales_h.
inline __m256i iq4_xs_scales(const u8* b) {
  const __m128i l = _mm_cvtsi32_si128(static_cast<int>(load_u32(b + 4))), mask = _mm_set1_epi8(0x0F);
  const __m128i low = _mm_unpacklo_epi8(_mm_and_si128(l, mask), _mm_and_si128(_mm_srli_epi16(l, 4), mask));
  const __m256i high = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(load_u16(b + 2)), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                                        _mm256_set1_epi32(3));
  return _mm256_sub_epi32(_mm256_or_si256(_mm256_cvtepu8_epi32(low), _mm256_slli_epi32(high, 4)), _mm256_set1_epi32(32));
}

float dot_iq4_xs(const void* row, const QuantizedActivations& x, int64_t n) {
  const u8* base = static_cast<const u8*>(row);
  Accumulators acc;
  const __m256i levels = _mm256_broadcastsi128_si256(load16(kIq4Levels)), ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0F);
  for (int64_t sb = 0; sb < n / 256; sb++) {
    const u8* b = base + sb * 136;
    const int8_t* a = x.q + sb * 256;
    alignas(32) float coef[8];
    _mm256_store_ps(coef, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(load_f16(b)), _mm256_cvtepi32_ps(iq4_xs_scales(b))),
                                        _mm256_loadu_ps(x.scales + sb * 8)));
#pragma GCC unroll 4
    for (int t = 0; t < 4; t++) {  // sub-blocks 2t (low 128 bits of the load) and 2t + 1 (high)
      const __m256i q = load32(b + 8 + 32 * t);
      const __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      const __m256i w0 = _mm256_shuffle_epi8(levels, _mm256_permute2x128_si256(lo, hi, 0x20));
      const __m256i w1 = _mm256_shuffle_epi8(levels, _mm256_permute2x128_si256(lo, hi, 0x31));
      add_chunk(acc, 2 * t, _mm256_madd_epi16(products_signed(w0, load32(a + 64 * t)), ones), coef);
      add_chunk(acc, 2 * t + 1, _mm256_madd_epi16(products_signed(w1, load32(a + 64 * t + 32)), ones), coef);
    }
  }
  return acc.sum();
}

// Bit-identical to the scalar quantize below: the same max, division, product and rounding.
void quantize_impl(const float* x, int64_t n, int8_t* q, float* scales, int32_t* sums) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < n / kActivationBlock; b++) {
    const float* in = x + b * kActivationBlock;
    const __m256 v0 = _mm256_loadu_ps(in), v1 = _mm256_loadu_ps(in + 8), v2 = _mm256_loadu_ps(in + 16), v3 = _mm256_loadu_ps(in + 24);
    const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, abs_mask), _mm256_and_ps(v1, abs_mask)),
                                   _mm256_max_ps(_mm256_and_ps(v2, abs_mask), _mm256_and_ps(v3, abs_mask)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
    const float d = amax / 127.0f, inverse = d > 0 ? 1.0f / d : 0.0f;
    scales[b] = d;
    const __m256 inv = _mm256_set1_ps(inverse);
    constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, inv), kRound));
    const __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, inv), kRound));
    const __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, inv), kRound));
    const __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, inv), kRound));
    sums[2 * b] = hsum_i32(_mm256_add_epi32(i0, i1));
    sums[2 * b + 1] = hsum_i32(_mm256_add_epi32(i2, i3));
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kActivationBlock), _mm256_permutevar8x32_epi32(packed, order));
  }
}

#else
// ------------------------------------------------------------------------------------------
// Portable: each block decoded to integer quants, integer scales per 16 and float scales.

struct Decoded {
  int8_t w[256];
  int32_t scale[16], min[16];  // per 16 elements
  float d = 0, dmin = 0;
};

inline void fill_scales(Decoded& out, int subs16, int32_t value) {
  for (int i = 0; i < subs16; i++) out.scale[i] = value, out.min[i] = 0;
}

inline void decode_q8_0(const u8* b, Decoded& o) {
  o.d = load_f16(b);
  std::memcpy(o.w, b + 2, 32);
  fill_scales(o, 2, 1);
}
inline void decode_q4_0(const u8* b, Decoded& o) {
  o.d = load_f16(b);
  for (int j = 0; j < 16; j++) {
    o.w[j] = static_cast<int8_t>((b[2 + j] & 0x0F) - 8);
    o.w[j + 16] = static_cast<int8_t>((b[2 + j] >> 4) - 8);
  }
  fill_scales(o, 2, 1);
}
inline void decode_q4_1(const u8* b, Decoded& o) {
  o.d = load_f16(b);
  o.dmin = -load_f16(b + 2);
  for (int j = 0; j < 16; j++) {
    o.w[j] = static_cast<int8_t>(b[4 + j] & 0x0F);
    o.w[j + 16] = static_cast<int8_t>(b[4 + j] >> 4);
  }
  fill_scales(o, 2, 1);
  o.min[0] = o.min[1] = 1;
}
inline void decode_q5(const u8* qh_bytes, const u8* qs, int offset, Decoded& o) {
  const uint32_t qh = load_u32(qh_bytes);
  for (int j = 0; j < 16; j++) {
    o.w[j] = static_cast<int8_t>(((qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4)) - offset);
    o.w[j + 16] = static_cast<int8_t>(((qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4)) - offset);
  }
}
inline void decode_q5_0(const u8* b, Decoded& o) {
  o.d = load_f16(b);
  decode_q5(b + 2, b + 6, 16, o);
  fill_scales(o, 2, 1);
}
inline void decode_q5_1(const u8* b, Decoded& o) {
  o.d = load_f16(b);
  o.dmin = -load_f16(b + 2);
  decode_q5(b + 4, b + 8, 0, o);
  fill_scales(o, 2, 1);
  o.min[0] = o.min[1] = 1;
}
inline void decode_iq4_nl(const u8* b, Decoded& o) {
  o.d = load_f16(b);
  for (int j = 0; j < 16; j++) {
    o.w[j] = kIq4Levels[b[2 + j] & 0x0F];
    o.w[j + 16] = kIq4Levels[b[2 + j] >> 4];
  }
  fill_scales(o, 2, 1);
}
inline void decode_q2_k(const u8* b, Decoded& o) {
  o.d = load_f16(b + 80);
  o.dmin = load_f16(b + 82);
  for (int i = 0; i < 16; i++) o.scale[i] = b[i] & 0x0F, o.min[i] = b[i] >> 4;
  for (int g = 0; g < 2; g++)
    for (int s = 0; s < 4; s++)
      for (int j = 0; j < 32; j++) o.w[g * 128 + s * 32 + j] = static_cast<int8_t>((b[16 + g * 32 + j] >> (2 * s)) & 3);
}
inline void decode_q3_k(const u8* b, Decoded& o) {
  o.d = load_f16(b + 108);
  int8_t sc[16];
  unpack_q3_k_scales(b + 96, sc);
  for (int i = 0; i < 16; i++) o.scale[i] = sc[i], o.min[i] = 0;
  for (int g = 0; g < 2; g++)
    for (int s = 0; s < 4; s++)
      for (int j = 0; j < 32; j++) {
        const int low = (b[32 + g * 32 + j] >> (2 * s)) & 3;
        const int minus = (((b[j] >> (g * 4 + s)) & 1) ^ 1) << 2;
        o.w[g * 128 + s * 32 + j] = static_cast<int8_t>(low - minus);
      }
}
inline void decode_k4_scales(const u8* b, Decoded& o) {
  o.d = load_f16(b);
  o.dmin = load_f16(b + 2);
  int32_t sc[8], mn[8];
  unpack_k4_scales(b + 4, sc, mn);
  for (int i = 0; i < 16; i++) o.scale[i] = sc[i / 2], o.min[i] = mn[i / 2];
}
inline void decode_q4_k(const u8* b, Decoded& o) {
  decode_k4_scales(b, o);
  for (int g = 0; g < 4; g++)
    for (int j = 0; j < 32; j++) {
      o.w[64 * g + j] = static_cast<int8_t>(b[16 + 32 * g + j] & 0x0F);
      o.w[64 * g + 32 + j] = static_cast<int8_t>(b[16 + 32 * g + j] >> 4);
    }
}
inline void decode_q5_k(const u8* b, Decoded& o) {
  decode_k4_scales(b, o);
  const u8* qh = b + 16;
  for (int g = 0; g < 4; g++)
    for (int h = 0; h < 2; h++) {
      const int sub = 2 * g + h;
      for (int j = 0; j < 32; j++)
        o.w[32 * sub + j] = static_cast<int8_t>(((b[48 + 32 * g + j] >> (4 * h)) & 0x0F) | (((qh[j] >> sub) & 1) << 4));
    }
}
inline void decode_q6_k(const u8* b, Decoded& o) {
  o.d = load_f16(b + 208);
  for (int i = 0; i < 16; i++) o.scale[i] = static_cast<int8_t>(b[192 + i]), o.min[i] = 0;
  for (int g = 0; g < 2; g++)
    for (int nk = 0; nk < 4; nk++) {  // elements 128g + 32 nk: nibble nk / 2 of ql[64g + 32 (nk % 2) + j]
      for (int j = 0; j < 32; j++) {
        const int low = (b[64 * g + 32 * (nk % 2) + j] >> (4 * (nk / 2))) & 0x0F;
        const int high = (b[128 + 32 * g + j] >> (2 * nk)) & 3;
        o.w[128 * g + 32 * nk + j] = static_cast<int8_t>((low | (high << 4)) - 32);
      }
    }
}
inline void decode_iq4_xs(const u8* b, Decoded& o) {
  o.d = load_f16(b);
  int32_t ls[8];
  unpack_iq4_xs_scales(b, ls);
  for (int i = 0; i < 16; i++) o.scale[i] = ls[i / 2], o.min[i] = 0;
  for (int s = 0; s < 8; s++)
    for (int j = 0; j < 16; j++) {
      o.w[32 * s + j] = kIq4Levels[b[8 + 16 * s + j] & 0x0F];
      o.w[32 * s + j + 16] = kIq4Levels[b[8 + 16 * s + j] >> 4];
    }
}

template <int kElements, int kBytes, void (*kDecode)(const u8*, Decoded&)>
float dot_blocks(const void* row, const QuantizedActivations& x, int64_t n) {
  const u8* b = static_cast<const u8*>(row);
  float total = 0;
  Decoded o;
  for (int64_t block = 0; block < n / kElements; block++) {
    kDecode(b + block * kBytes, o);
    for (int c = 0; c < kElements / 32; c++) {
      const int64_t j = block * (kElements / 32) + c;
      const int8_t* a = x.q + j * 32;
      int32_t integer = 0, minimum = 0;
      for (int h = 0; h < 2; h++) {
        const int8_t* w = o.w + 32 * c + 16 * h;
        const int8_t* v = a + 16 * h;
        int32_t sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < 16; i++) sum += static_cast<int16_t>(w[i] * v[i]);
        integer += o.scale[2 * c + h] * sum;
        minimum += o.min[2 * c + h] * x.sums[2 * j + h];
      }
      const float dx = x.scales[j];
      total += dx * (o.d * static_cast<float>(integer));
      if (minimum != 0) total -= dx * (o.dmin * static_cast<float>(minimum));
    }
  }
  return total;
}

float dot_q8_0(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<32, 34, decode_q8_0>(r, x, n); }
float dot_q4_0(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<32, 18, decode_q4_0>(r, x, n); }
float dot_q4_1(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<32, 20, decode_q4_1>(r, x, n); }
float dot_q5_0(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<32, 22, decode_q5_0>(r, x, n); }
float dot_q5_1(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<32, 24, decode_q5_1>(r, x, n); }
float dot_iq4_nl(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<32, 18, decode_iq4_nl>(r, x, n); }
float dot_q2_k(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<256, 84, decode_q2_k>(r, x, n); }
float dot_q3_k(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<256, 110, decode_q3_k>(r, x, n); }
float dot_q4_k(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<256, 144, decode_q4_k>(r, x, n); }
float dot_q5_k(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<256, 176, decode_q5_k>(r, x, n); }
float dot_q6_k(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<256, 210, decode_q6_k>(r, x, n); }
float dot_iq4_xs(const void* r, const QuantizedActivations& x, int64_t n) { return dot_blocks<256, 136, decode_iq4_xs>(r, x, n); }

void quantize_impl(const float* x, int64_t n, int8_t* q, float* scales, int32_t* sums) {
  for (int64_t b = 0; b < n / kActivationBlock; b++) {
    const float* in = x + b * kActivationBlock;
    float amax = 0;
    for (int i = 0; i < kActivationBlock; i++) amax = std::fmax(amax, std::fabs(in[i]));
    const float d = amax / 127.0f, inverse = d > 0 ? 1.0f / d : 0.0f;
    scales[b] = d;
    for (int half = 0; half < 2; half++) {
      int32_t sum = 0;
      for (int i = half * 16; i < half * 16 + 16; i++) {
        const int8_t value = static_cast<int8_t>(std::nearbyint(in[i] * inverse));
        q[b * kActivationBlock + i] = value;
        sum += value;
      }
      sums[b * 2 + half] = sum;
    }
  }
}
#endif

// The level's table, indexed by DType.
constexpr QuantKernels make_quant_kernels() {
  QuantKernels k{};
  k.quantize = quantize_impl;
  k.dot[static_cast<int>(DType::Q8_0)] = dot_q8_0;
  k.dot[static_cast<int>(DType::Q4_0)] = dot_q4_0;
  k.dot[static_cast<int>(DType::Q4_1)] = dot_q4_1;
  k.dot[static_cast<int>(DType::Q5_0)] = dot_q5_0;
  k.dot[static_cast<int>(DType::Q5_1)] = dot_q5_1;
  k.dot[static_cast<int>(DType::Q2_K)] = dot_q2_k;
  k.dot[static_cast<int>(DType::Q3_K)] = dot_q3_k;
  k.dot[static_cast<int>(DType::Q4_K)] = dot_q4_k;
  k.dot[static_cast<int>(DType::Q5_K)] = dot_q5_k;
  k.dot[static_cast<int>(DType::Q6_K)] = dot_q6_k;
  k.dot[static_cast<int>(DType::IQ4_NL)] = dot_iq4_nl;
  k.dot[static_cast<int>(DType::IQ4_XS)] = dot_iq4_xs;
  return k;
}

}  // namespace
}  // namespace lw::cpu
