// The body of the CPU kernels (cpu_kernels.h), written once in plain C++ and compiled by each
// cpu_kernels_<level>.cpp with that level's flags, so the compiler vectorises it for that
// instruction set. Everything here has internal linkage and uses no standard-library templates:
// an inline template instantiated under -mavx512f could otherwise be merged by the linker into
// code that runs on CPUs without it.
//
// Built with -ffp-contract=off: a product and a sum are fused only where multiply_add says so,
// in every kernel alike, so kernels that block registers differently still round identically.
//
// Include only from cpu_kernels_<level>.cpp.
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "backend/cpu_kernels.h"

namespace lw::cpu {
namespace {

constexpr int kLanes = 16;

inline float multiply_add(float a, float b, float c) {
#if defined(__FMA__)
  return __builtin_fmaf(a, b, c);
#else
  return a * b + c;
#endif
}

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline float max_f(float a, float b) { return a > b ? a : b; }

inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu, bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exponent = 113;
    while (!(mantissa & 0x400u)) mantissa <<= 1, exponent--;
    bits = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float bf16_bits_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Sum of 16 lanes, in lane order.
inline float sum_lanes(const float* lanes) {
  float sum = 0;
  for (int l = 0; l < kLanes; l++) sum += lanes[l];
  return sum;
}

// Columns past the last multiple of 16 join the lanes as one zero-padded step, so every kernel
// (whatever its register blocking) accumulates them the same way as the columns before.
inline void tail_into_lanes(float* lanes, const float* x, const float* w, int64_t count) {
  float xt[kLanes] = {}, wt[kLanes] = {};
  for (int64_t l = 0; l < count; l++) xt[l] = x[l], wt[l] = w[l];
  for (int l = 0; l < kLanes; l++) lanes[l] = multiply_add(xt[l], wt[l], lanes[l]);
}

inline float dot_impl(const float* a, const float* b, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) lanes[l] = multiply_add(a[i + l], b[i + l], lanes[l]);
  if (i < n) tail_into_lanes(lanes, a + i, b + i, n - i);
  return sum_lanes(lanes);
}

[[maybe_unused]] void dot4_impl(const float* x, const float* const* w, int64_t n, float* out) {
  float lanes[4][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int r = 0; r < 4; r++)
      for (int l = 0; l < kLanes; l++) lanes[r][l] = multiply_add(x[i + l], w[r][i + l], lanes[r][l]);
  for (int r = 0; r < 4; r++) {
    if (i < n) tail_into_lanes(lanes[r], x + i, w[r] + i, n - i);
    out[r] = sum_lanes(lanes[r]);
  }
}

[[maybe_unused]] void dot4x4_impl(const float* const* x, const float* const* w, int64_t n, float* out) {
  float lanes[4][4][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int t = 0; t < 4; t++)
      for (int r = 0; r < 4; r++)
        for (int l = 0; l < kLanes; l++) lanes[t][r][l] = multiply_add(x[t][i + l], w[r][i + l], lanes[t][r][l]);
  for (int t = 0; t < 4; t++)
    for (int r = 0; r < 4; r++) {
      if (i < n) tail_into_lanes(lanes[t][r], x[t] + i, w[r] + i, n - i);
      out[t * 4 + r] = sum_lanes(lanes[t][r]);
    }
}

void half_to_f32_impl(const uint16_t* in, bool f16, float* out, int64_t n) {
  if (!f16) {
    for (int64_t i = 0; i < n; i++) out[i] = bf16_bits_to_f32(in[i]);
    return;
  }
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
#endif
  for (; i < n; i++) out[i] = f16_bits_to_f32(in[i]);
}

// Rows widened 64 columns at a time into a small buffer, then the float32 product: the same
// lanes and order as dot4_impl.
[[maybe_unused]] void dot4_half_impl(const float* x, const uint16_t* const* w, int64_t n, bool f16, float* out) {
  constexpr int64_t kChunk = 4 * kLanes;
  float lanes[4][kLanes] = {};
  float wide[4][kChunk];
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t chunk = min64(kChunk, n - i), whole = chunk / kLanes * kLanes;
    for (int r = 0; r < 4; r++) half_to_f32_impl(w[r] + i, f16, wide[r], chunk);
    for (int64_t c = 0; c < whole; c += kLanes)
      for (int r = 0; r < 4; r++)
        for (int l = 0; l < kLanes; l++) lanes[r][l] = multiply_add(x[i + c + l], wide[r][c + l], lanes[r][l]);
    if (whole < chunk)
      for (int r = 0; r < 4; r++) tail_into_lanes(lanes[r], x + i + whole, wide[r] + whole, chunk - whole);
  }
  for (int r = 0; r < 4; r++) out[r] = sum_lanes(lanes[r]);
}

// exp(x) within a few ulp for x in [-87, 88] (clamped outside: exp(-87) ~ 1.6e-38 stands in for
// 0), branch-free so that loops of it vectorise: x = n ln2 + r, |r| <= ln2 / 2, and exp(r) by its
// Taylor series to r^7 (remainder below 6e-9 relative).
inline float exp_vectorizable(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float rounder = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const float n = (x * 1.44269504088896341f + rounder) - rounder;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
  float p = 1.0f / 5040.0f;
  p = multiply_add(p, r, 1.0f / 720.0f);
  p = multiply_add(p, r, 1.0f / 120.0f);
  p = multiply_add(p, r, 1.0f / 24.0f);
  p = multiply_add(p, r, 1.0f / 6.0f);
  p = multiply_add(p, r, 0.5f);
  p = multiply_add(p, r, 1.0f);
  p = multiply_add(p, r, 1.0f);
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

void rmsnorm_impl(float* y, const float* x, const float* gain, int64_t n, float eps) {
  const float mean_square = dot_impl(x, x, n) / static_cast<float>(n);
  const float scale = 1.0f / std::sqrt(mean_square + eps);
  for (int64_t i = 0; i < n; i++) y[i] = gain[i] * (x[i] * scale);
}

void swiglu_impl(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + exp_vectorizable(-gate[i])) * up[i];
}

// Scores of two queries against a transposed key tile kt[d][j]: each score is its own chain
// over d in order.
inline void tile_scores(const float* qa, const float* qb, const float* kt, int head_dim, float* sa, float* sb) {
  float a[kAttentionTile] = {}, b[kAttentionTile] = {};
  for (int d = 0; d < head_dim; d++) {
    const float* k = kt + static_cast<int64_t>(d) * kAttentionTile;
    const float xa = qa[d], xb = qb[d];
    for (int j = 0; j < kAttentionTile; j++) a[j] = multiply_add(xa, k[j], a[j]), b[j] = multiply_add(xb, k[j], b[j]);
  }
  for (int j = 0; j < kAttentionTile; j++) sa[j] = a[j], sb[j] = b[j];
}

// Turns a query's scores of keys 0..count-1 into weights exp(s - new max), folds the previous
// tiles' state (running max, sum, accumulator) into the new max, and returns the accumulator's
// correction factor.
inline float softmax_tile(float* scores, int count, float scale, float* running_max, float* running_sum) {
  float tile_max = -HUGE_VALF;
#pragma omp simd reduction(max : tile_max)
  for (int j = 0; j < count; j++) {
    scores[j] *= scale;
    tile_max = max_f(tile_max, scores[j]);
  }
  const float new_max = max_f(*running_max, tile_max);
  const float correction = exp_vectorizable(*running_max - new_max);  // ~0 on the first tile
  float sum = 0;  // summed in vector lanes: the same order for every query
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < count; j++) {
    scores[j] = exp_vectorizable(scores[j] - new_max);
    sum += scores[j];
  }
  for (int j = count; j < kAttentionTile; j++) scores[j] = 0;
  *running_sum = *running_sum * correction + sum;
  *running_max = new_max;
  return correction;
}

// KV cache elements (AttentionWork::kv_dtype) as a template argument: each kind has its own
// attend_typed, so float32 caches run exactly the loops they always ran.
enum KvKind : int { kKvF32, kKvF16, kKvBF16 };

inline float bits_as_f32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline uint32_t f32_as_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

// F16 bits to float32 with neither branches nor loops, so that loops of it vectorise (the
// portable kernels' widening); exact for every input, subnormals, infinities and NaN included.
// Normal values: the exponent and mantissa moved into place and the exponent bias fixed by a
// multiplication by 2^-112; subnormals (|h| < 2^-14): the mantissa as a float32 of exponent -1
// minus 0.5, which is mantissa * 2^-24 exactly. (M. Dukhan's FP16 library, fp16_ieee_to_fp32_value.)
inline float f16_bits_to_f32_branchless(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16, sign = w & 0x80000000u, two_w = w + w;
  const float normalized = bits_as_f32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = bits_as_f32((two_w >> 17) | (126u << 23)) - 0.5f;
  return bits_as_f32(sign | (two_w < (1u << 27) ? f32_as_bits(denormalized) : f32_as_bits(normalized)));
}

// Element i of a cached row, as float32.
template <int kKind>
inline float kv_value(const void* row, int64_t i) {
  if constexpr (kKind == kKvF32) return static_cast<const float*>(row)[i];
  else if constexpr (kKind == kKvF16) return f16_bits_to_f32_branchless(static_cast<const uint16_t*>(row)[i]);
  else return bf16_bits_to_f32(static_cast<const uint16_t*>(row)[i]);
}

#if defined(__AVX2__) && defined(__F16C__)
// Elements i .. i + 7 of a cached row, widened in a register: F16 by the F16C conversion, BF16
// by moving its bits to the top half of each float32 lane.
template <int kKind>
inline __m256 kv_load8(const void* row, int64_t i) {
  if constexpr (kKind == kKvF32) {
    return _mm256_loadu_ps(static_cast<const float*>(row) + i);
  } else {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i));
    if constexpr (kKind == kKvF16) return _mm256_cvtph_ps(bits);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
}
#endif

#if defined(__AVX512F__)
// The same for 16 elements (zero-masked forms: the plain intrinsics draw false "uninitialized"
// warnings from GCC 12).
template <int kKind>
inline __m512 kv_load16(const void* row, int64_t i) {
  if constexpr (kKind == kKvF32) {
    return _mm512_loadu_ps(static_cast<const float*>(row) + i);
  } else {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + i));
    if constexpr (kKind == kKvF16) return _mm512_maskz_cvtph_ps(0xFFFF, bits);
    else return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, _mm512_maskz_cvtepu16_epi32(0xFFFF, bits), 16));
  }
}
#endif

// column[d * kAttentionTile] = key[d] widened to float32, or 0 for a missing key (past the tile's
// keys): one column of the transposed key tile.
template <int kKind>
inline void key_into_tile(const void* key, float* column, int head_dim) {
  int d = 0;
  if (!key) {
    for (; d < head_dim; d++) column[static_cast<int64_t>(d) * kAttentionTile] = 0.0f;
    return;
  }
#if defined(__AVX2__) && defined(__F16C__)
  if constexpr (kKind != kKvF32) {
    alignas(32) float wide[8];
    for (; d + 8 <= head_dim; d += 8) {
      _mm256_store_ps(wide, kv_load8<kKind>(key, d));
      for (int i = 0; i < 8; i++) column[static_cast<int64_t>(d + i) * kAttentionTile] = wide[i];
    }
  }
#endif
  for (; d < head_dim; d++) column[static_cast<int64_t>(d) * kAttentionTile] = kv_value<kKind>(key, d);
}

// acc = acc * correction + sum_j weights[j] * values[j], for two queries sharing the values. With
// AVX-512 and a head of 16..128 floats the accumulators stay in registers across the keys (the
// compiler keeps arrays in memory); the arithmetic is the same multiply_add per element.
#if defined(__AVX512F__)
template <int kKind, int kVectors>
inline void accumulate_values_avx512(float* acc_a, float* acc_b, float correction_a, float correction_b, const float* weights_a,
                                     const float* weights_b, const void* const* values, int count) {
  __m512 a[kVectors], b[kVectors];
  for (int v = 0; v < kVectors; v++) {
    a[v] = _mm512_mul_ps(_mm512_loadu_ps(acc_a + 16 * v), _mm512_set1_ps(correction_a));
    b[v] = _mm512_mul_ps(_mm512_loadu_ps(acc_b + 16 * v), _mm512_set1_ps(correction_b));
  }
  for (int j = 0; j < count; j++) {
    const void* value = values[j];
    const __m512 wa = _mm512_set1_ps(weights_a[j]), wb = _mm512_set1_ps(weights_b[j]);
    for (int v = 0; v < kVectors; v++) {
      const __m512 x = kv_load16<kKind>(value, 16 * v);
      a[v] = _mm512_fmadd_ps(wa, x, a[v]);
      b[v] = _mm512_fmadd_ps(wb, x, b[v]);
    }
  }
  for (int v = 0; v < kVectors; v++) _mm512_storeu_ps(acc_a + 16 * v, a[v]), _mm512_storeu_ps(acc_b + 16 * v, b[v]);
}

// Four queries at once, for heads of a multiple of 64 floats: twice the multiply-adds per load of
// the pair kernels. Per query the arithmetic is theirs (scores one chain over d; values scaled by
// the correction, then one multiply-add per key), so results do not depend on the grouping.
inline void tile_scores4(const float* const* queries, const float* kt, int head_dim, float (*scores)[kAttentionTile]) {
  __m512 acc[4][4];
  for (auto& query : acc)
    for (auto& lanes : query) lanes = _mm512_setzero_ps();
  for (int d = 0; d < head_dim; d++) {
    const float* k = kt + static_cast<int64_t>(d) * kAttentionTile;
    const __m512 k0 = _mm512_loadu_ps(k), k1 = _mm512_loadu_ps(k + 16), k2 = _mm512_loadu_ps(k + 32), k3 = _mm512_loadu_ps(k + 48);
    for (int i = 0; i < 4; i++) {
      const __m512 q = _mm512_set1_ps(queries[i][d]);
      acc[i][0] = _mm512_fmadd_ps(q, k0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(q, k1, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(q, k2, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(q, k3, acc[i][3]);
    }
  }
  for (int i = 0; i < 4; i++)
    for (int v = 0; v < 4; v++) _mm512_storeu_ps(scores[i] + 16 * v, acc[i][v]);
}

template <int kKind>
inline void accumulate_values4(float* const* acc, const float* correction, float (*weights)[kAttentionTile],
                               const void* const* values, int count, int head_dim) {
  for (int d0 = 0; d0 < head_dim; d0 += 64) {
    __m512 a[4][4];
    for (int i = 0; i < 4; i++)
      for (int v = 0; v < 4; v++) a[i][v] = _mm512_mul_ps(_mm512_loadu_ps(acc[i] + d0 + 16 * v), _mm512_set1_ps(correction[i]));
    for (int j = 0; j < count; j++) {
      const void* value = values[j];
      const __m512 v0 = kv_load16<kKind>(value, d0), v1 = kv_load16<kKind>(value, d0 + 16), v2 = kv_load16<kKind>(value, d0 + 32),
                   v3 = kv_load16<kKind>(value, d0 + 48);
      for (int i = 0; i < 4; i++) {
        const __m512 w = _mm512_set1_ps(weights[i][j]);
        a[i][0] = _mm512_fmadd_ps(w, v0, a[i][0]);
        a[i][1] = _mm512_fmadd_ps(w, v1, a[i][1]);
        a[i][2] = _mm512_fmadd_ps(w, v2, a[i][2]);
        a[i][3] = _mm512_fmadd_ps(w, v3, a[i][3]);
      }
    }
    for (int i = 0; i < 4; i++)
      for (int v = 0; v < 4; v++) _mm512_storeu_ps(acc[i] + d0 + 16 * v, a[i][v]);
  }
}
#endif

// Half-precision rows at AVX2 and above: 8 elements widened per register, then the same
// multiply_add per element as the loops after them (FMA: _mm256_fmadd_ps rounds as fmaf does).
// Returns the first element left for the plain loop (all of them for float32 rows, which the
// compiler vectorises as it always has).
template <int kKind>
inline int accumulate_value_registers(float* acc_a, float* acc_b, float wa, float wb, const void* value, int head_dim) {
  int d = 0;
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
  if constexpr (kKind != kKvF32) {
    const __m256 va = _mm256_set1_ps(wa), vb = _mm256_set1_ps(wb);
    for (; d + 8 <= head_dim; d += 8) {
      const __m256 x = kv_load8<kKind>(value, d);
      _mm256_storeu_ps(acc_a + d, _mm256_fmadd_ps(va, x, _mm256_loadu_ps(acc_a + d)));
      if (acc_b) _mm256_storeu_ps(acc_b + d, _mm256_fmadd_ps(vb, x, _mm256_loadu_ps(acc_b + d)));
    }
  }
#else
  (void)acc_a, (void)acc_b, (void)wa, (void)wb, (void)value, (void)head_dim;
#endif
  return d;
}

template <int kKind>
inline void accumulate_values_any(float* acc_a, float* acc_b, float correction_a, float correction_b, const float* weights_a,
                                  const float* weights_b, const void* const* values, int count, int head_dim) {
  for (int d = 0; d < head_dim; d++) acc_a[d] *= correction_a, acc_b[d] *= correction_b;
  for (int j = 0; j < count; j++) {
    const void* value = values[j];
    const float wa = weights_a[j], wb = weights_b[j];
    for (int d = accumulate_value_registers<kKind>(acc_a, acc_b, wa, wb, value, head_dim); d < head_dim; d++)
      acc_a[d] = multiply_add(wa, kv_value<kKind>(value, d), acc_a[d]), acc_b[d] = multiply_add(wb, kv_value<kKind>(value, d), acc_b[d]);
  }
}

// The same for one query alone.
template <int kKind>
inline void accumulate_values_one(float* acc, float correction, const float* weights, const void* const* values, int count, int head_dim) {
  for (int d = 0; d < head_dim; d++) acc[d] *= correction;
  for (int j = 0; j < count; j++) {
    const void* value = values[j];
    const float w = weights[j];
    for (int d = accumulate_value_registers<kKind>(acc, nullptr, w, 0.0f, value, head_dim); d < head_dim; d++)
      acc[d] = multiply_add(w, kv_value<kKind>(value, d), acc[d]);
  }
}

template <int kKind>
void attend_typed(const AttentionWork& work, float* scratch) {
  const int head_dim = work.head_dim, count = work.count;
  float* kt = scratch;                                              // [head_dim][tile]
  float* weights = kt + static_cast<int64_t>(head_dim) * kAttentionTile;  // [2][tile] (second half
  float* accumulators = weights + kAttentionTile;                   //  lives past the first)
  float* running_max = accumulators + static_cast<int64_t>(count) * head_dim;
  float* running_sum = running_max + count;
  float weights_b[kAttentionTile];
  int longest = 0;
  for (int i = 0; i < count; i++) {
    longest = work.lengths[i] > longest ? work.lengths[i] : longest;
    running_max[i] = -HUGE_VALF, running_sum[i] = 0;
  }
  for (int64_t i = 0; i < static_cast<int64_t>(count) * head_dim; i++) accumulators[i] = 0;

  for (int start = 0; start < longest; start += kAttentionTile) {
    const int keys = static_cast<int>(min64(kAttentionTile, longest - start));
    for (int j = 0; j < kAttentionTile; j++) key_into_tile<kKind>(j < keys ? work.keys[start + j] : nullptr, kt + j, head_dim);
    int a = 0;
#if defined(__AVX512F__)
    // Four queries at a time; a query whose keys end before this tile gets all-zero weights and
    // a correction of 1, which leave its state exactly as it was.
    if (head_dim % 64 == 0)
      for (; a + 4 <= count; a += 4) {
        int seen[4], used = 0;
        for (int i = 0; i < 4; i++) {
          seen[i] = static_cast<int>(min64(keys, work.lengths[a + i] - start));
          used = seen[i] > used ? seen[i] : used;
        }
        if (used <= 0) continue;
        float scores[4][kAttentionTile], correction[4];
        tile_scores4(work.queries + a, kt, head_dim, scores);
        float* acc[4];
        for (int i = 0; i < 4; i++) {
          acc[i] = accumulators + static_cast<int64_t>(a + i) * head_dim;
          correction[i] = 1;
          if (seen[i] > 0) correction[i] = softmax_tile(scores[i], seen[i], work.scale, &running_max[a + i], &running_sum[a + i]);
          else for (int j = 0; j < kAttentionTile; j++) scores[i][j] = 0;
        }
        accumulate_values4<kKind>(acc, correction, scores, work.values + start, used, head_dim);
      }
#endif
    // The rest two at a time (the second may be the first again when the count is odd, or one
    // whose keys end before this tile; its weights are then all zero and its state is untouched).
    for (; a < count; a += 2) {
      const int b = a + 1 < count ? a + 1 : a;
      const int seen_a = static_cast<int>(min64(keys, work.lengths[a] - start));
      const int seen_b = b != a ? static_cast<int>(min64(keys, work.lengths[b] - start)) : 0;
      if (seen_a <= 0 && seen_b <= 0) continue;
      tile_scores(work.queries[a], work.queries[b], kt, head_dim, weights, weights_b);
      float correction_a = 1, correction_b = 1;
      if (seen_a > 0) correction_a = softmax_tile(weights, seen_a, work.scale, &running_max[a], &running_sum[a]);
      else for (int j = 0; j < kAttentionTile; j++) weights[j] = 0;
      if (seen_b > 0) correction_b = softmax_tile(weights_b, seen_b, work.scale, &running_max[b], &running_sum[b]);
      else for (int j = 0; j < kAttentionTile; j++) weights_b[j] = 0;
      float* acc_a = accumulators + static_cast<int64_t>(a) * head_dim;
      float* acc_b = accumulators + static_cast<int64_t>(b) * head_dim;
      const int used = seen_a > seen_b ? seen_a : seen_b;
      if (b == a) {
        accumulate_values_one<kKind>(acc_a, correction_a, weights, work.values + start, used, head_dim);
        continue;
      }
#if defined(__AVX512F__)
      if (head_dim == 64) accumulate_values_avx512<kKind, 4>(acc_a, acc_b, correction_a, correction_b, weights, weights_b, work.values + start, used);
      else if (head_dim == 128) accumulate_values_avx512<kKind, 8>(acc_a, acc_b, correction_a, correction_b, weights, weights_b, work.values + start, used);
      else
#endif
        accumulate_values_any<kKind>(acc_a, acc_b, correction_a, correction_b, weights, weights_b, work.values + start, used, head_dim);
    }
  }
  for (int i = 0; i < count; i++) {
    const float* acc = accumulators + static_cast<int64_t>(i) * head_dim;
    for (int d = 0; d < head_dim; d++) work.outputs[i][d] = acc[d] / running_sum[i];
  }
}

void attend_impl(const AttentionWork& work, float* scratch) {
  switch (work.kv_dtype) {
    case DType::F16: return attend_typed<kKvF16>(work, scratch);
    case DType::BF16: return attend_typed<kKvBF16>(work, scratch);
    default: return attend_typed<kKvF32>(work, scratch);  // F32 (the backend refuses other types)
  }
}

}  // namespace
}  // namespace lw::cpu
