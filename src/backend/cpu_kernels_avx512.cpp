// The kernels for CPUs with AVX-512 (F, BW, VL, DQ) and F16C: built with those flags
// (CMakeLists.txt); the matrix-vector and 4x4 products by hand, since the compiler does not keep
// sixteen accumulators in registers on its own.
#include <immintrin.h>

#include "backend/cpu_kernels_impl.h"

namespace lw::cpu {
namespace {

// 16 (or, masked, fewer) values of a row as float32; masked-off lanes are zero.
inline __m512 load16(const float* p, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, p); }
inline __m512 load16(const uint16_t* p, __mmask16 mask, bool f16) {
  const __m256i bits = _mm256_maskz_loadu_epi16(mask, p);
  // Zero-masked forms: the plain intrinsics draw false "uninitialized" warnings from GCC 12.
  if (f16) return _mm512_maskz_cvtph_ps(0xFFFF, bits);
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, _mm512_maskz_cvtepu16_epi32(0xFFFF, bits), 16));
}

inline __mmask16 columns_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

inline float sum_register(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  return sum_lanes(lanes);
}

// The same 16 lanes, order and zero-padded tail step as dot4_impl, by hand: four rows (float32,
// or F16/BF16 widened in registers, so decode writes no scratch row) against one token.
template <bool kHalf>
void dot4_registers(const float* x, const void* const* w, int64_t n, bool f16, float* out) {
  __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = columns_mask(n - i);
    const __m512 xv = load16(x + i, mask);
    for (int r = 0; r < 4; r++) {
      // The same columns of the next block's rows (four rows on): the hardware prefetcher stops
      // at each 4 KiB page, which a row of 2048 half values fills (decode 1.05x faster).
      if (!kHalf || (i & 31) == 0)
        _mm_prefetch(static_cast<const char*>(w[r]) + (4 * n + i) * (kHalf ? 2 : 4), _MM_HINT_T1);
      const __m512 wv = kHalf ? load16(static_cast<const uint16_t*>(w[r]) + i, mask, f16) : load16(static_cast<const float*>(w[r]) + i, mask);
      s[r] = _mm512_fmadd_ps(xv, wv, s[r]);
    }
  }
  for (int r = 0; r < 4; r++) out[r] = sum_register(s[r]);
}

void dot4_avx512(const float* x, const float* const* w, int64_t n, float* out) {
  dot4_registers<false>(x, reinterpret_cast<const void* const*>(w), n, false, out);
}
void dot4_half_avx512(const float* x, const uint16_t* const* w, int64_t n, bool f16, float* out) {
  dot4_registers<true>(x, reinterpret_cast<const void* const*>(w), n, f16, out);
}

// Four tokens against four float32 rows: 16 accumulators, each load feeding four FMAs.
void dot4x4_avx512(const float* const* x, const float* const* w, int64_t n, float* out) {
  __m512 s[4][4];
  for (auto& row : s)
    for (auto& lane : row) lane = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = columns_mask(n - i);
    const __m512 w0 = load16(w[0] + i, mask), w1 = load16(w[1] + i, mask), w2 = load16(w[2] + i, mask), w3 = load16(w[3] + i, mask);
    for (int t = 0; t < 4; t++) {
      const __m512 xv = load16(x[t] + i, mask);
      s[t][0] = _mm512_fmadd_ps(xv, w0, s[t][0]);
      s[t][1] = _mm512_fmadd_ps(xv, w1, s[t][1]);
      s[t][2] = _mm512_fmadd_ps(xv, w2, s[t][2]);
      s[t][3] = _mm512_fmadd_ps(xv, w3, s[t][3]);
    }
  }
  for (int t = 0; t < 4; t++)
    for (int r = 0; r < 4; r++) out[t * 4 + r] = sum_register(s[t][r]);
}

}  // namespace

extern const Kernels kAvx512Kernels = {Level::Avx512,   dot4x4_avx512, dot4_avx512, dot4_half_avx512,
                                       half_to_f32_impl, rmsnorm_impl,  swiglu_impl, attend_impl};

}  // namespace lw::cpu
