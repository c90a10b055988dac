#include "backend/amx.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "format/dtype.h"

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define LW_AMX 1
#endif

namespace lw {

int amx_padded_tokens(int tokens) { return (tokens + 31) / 32 * 32; }
int64_t amx_padded_cols(int64_t cols) { return (cols + 31) / 32 * 32; }

#if LW_AMX
namespace {

constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;

bool detect_amx() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24), avx512_bf16 = __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
  if (!amx_bf16 || !amx_tile || !avx512_bf16) return false;
  // Linux hands out the 8 KiB tile state only to processes that ask.
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

constexpr int64_t kGroupBytes = 768 << 10;  // packed weights per group: well inside a 2 MiB L2

struct TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// 16 rows x 16 dwords, transposed in registers: afterwards rows[j] holds dword j of rows 0..15.
// (Zero-masked forms of the intrinsics: the plain ones draw false GCC 12 warnings.)
__attribute__((target("avx512f"))) inline void transpose_16x16_dwords(__m512i* rows) {
  __m512i pairs[16], quads[16];
  for (int i = 0; i < 16; i += 2) {  // per 128-bit lane: [a0 b0 a1 b1], [a2 b2 a3 b3]
    pairs[i] = _mm512_maskz_unpacklo_epi32(0xFFFF, rows[i], rows[i + 1]);
    pairs[i + 1] = _mm512_maskz_unpackhi_epi32(0xFFFF, rows[i], rows[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // quads[i + c], lane L: dword 4L + c of rows i .. i + 3
    quads[i] = _mm512_maskz_unpacklo_epi64(0xFF, pairs[i], pairs[i + 2]);
    quads[i + 1] = _mm512_maskz_unpackhi_epi64(0xFF, pairs[i], pairs[i + 2]);
    quads[i + 2] = _mm512_maskz_unpacklo_epi64(0xFF, pairs[i + 1], pairs[i + 3]);
    quads[i + 3] = _mm512_maskz_unpackhi_epi64(0xFF, pairs[i + 1], pairs[i + 3]);
  }
  for (int c = 0; c < 4; c++) {  // gather lane L of the four row groups into dword 4L + c
    const __m512i even_a = _mm512_maskz_shuffle_i32x4(0xFFFF, quads[c], quads[4 + c], 0x88), odd_a = _mm512_maskz_shuffle_i32x4(0xFFFF, quads[c], quads[4 + c], 0xDD);
    const __m512i even_b = _mm512_maskz_shuffle_i32x4(0xFFFF, quads[8 + c], quads[12 + c], 0x88), odd_b = _mm512_maskz_shuffle_i32x4(0xFFFF, quads[8 + c], quads[12 + c], 0xDD);
    rows[c] = _mm512_maskz_shuffle_i32x4(0xFFFF, even_a, even_b, 0x88);
    rows[8 + c] = _mm512_maskz_shuffle_i32x4(0xFFFF, even_a, even_b, 0xDD);
    rows[4 + c] = _mm512_maskz_shuffle_i32x4(0xFFFF, odd_a, odd_b, 0x88);
    rows[12 + c] = _mm512_maskz_shuffle_i32x4(0xFFFF, odd_a, odd_b, 0xDD);
  }
}

// Columns k .. k+31 of a weight row as 32 BF16 values (F32 and F16 rounded to nearest even in
// registers), zero past the row's end.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) inline __m512i row_segment_bf16(const char* row, DType dtype,
                                                                                              int64_t k, int64_t cols) {
  const int64_t left = std::max<int64_t>(cols - k, 0);
  const __mmask32 mask = left >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((1ull << left) - 1);
  const __mmask16 low = static_cast<__mmask16>(mask), high = static_cast<__mmask16>(mask >> 16);
  switch (dtype) {
    case DType::BF16: return _mm512_maskz_loadu_epi16(mask, reinterpret_cast<const uint16_t*>(row) + k);
    case DType::F16: {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + k;
      const __m512 lo = _mm512_maskz_cvtph_ps(0xFFFF, _mm256_maskz_loadu_epi16(low, p));
      const __m512 hi = _mm512_maskz_cvtph_ps(0xFFFF, _mm256_maskz_loadu_epi16(high, p + 16));
      return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    }
    case DType::F32: {
      const float* p = reinterpret_cast<const float*>(row) + k;
      return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(high, p + 16), _mm512_maskz_loadu_ps(low, p));
    }
    default: break;  // block types are widened to float32 before they reach the tiles
  }
  return _mm512_setzero_si512();
}

// Weight rows r0 .. r0+31 in the tiles' layout: two groups of 16 rows, each [cols/2][16][2] (pairs
// of consecutive columns of one row side by side, the 16 rows across a 64-byte tile row); rows
// past the end are zero.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void pack_weights(const WeightView& w, int64_t r0,
                                                                                   int64_t cols_padded, uint16_t* packed) {
  const size_t row_bytes = static_cast<size_t>(w.cols) * dtype_size(w.dtype);
  for (int group = 0; group < 2; group++) {
    const char* source[16];
    for (int j = 0; j < 16; j++) {
      const int64_t r = r0 + group * 16 + j;
      source[j] = r < w.rows ? static_cast<const char*>(w.data) + static_cast<size_t>(r) * row_bytes : nullptr;
    }
    uint16_t* to = packed + static_cast<size_t>(group) * static_cast<size_t>(cols_padded) * 16;
    for (int64_t k = 0; k < cols_padded; k += 32) {
      __m512i rows[16];
      for (int j = 0; j < 16; j++) rows[j] = source[j] ? row_segment_bf16(source[j], w.dtype, k, w.cols) : _mm512_setzero_si512();
      transpose_16x16_dwords(rows);
      for (int j = 0; j < 16; j++) _mm512_storeu_si512(to + (k / 2 + j) * 32, rows[j]);
    }
  }
}

}  // namespace

bool amx_available() {
  static const bool available = detect_amx();
  return available;
}

// Activations are stored tile by tile: block (t / 16, c / 32) of 16 tokens x 32 columns is 1 KiB
// of contiguous memory, so a tile load reads one run of cache lines.
inline int64_t tile_offset(int64_t t, int64_t c, int64_t padded_cols) {
  return ((t / 16) * (padded_cols / 32) + c / 32) * 512 + (t % 16) * 32 + c % 32;
}

__attribute__((target("avx512f,avx512bf16"))) void amx_activations(const float* x, int tokens, int64_t cols, uint16_t* out) {
  const int64_t padded = amx_padded_cols(cols);
  for (int t = 0; t < tokens; t++) {
    const float* in = x + static_cast<int64_t>(t) * cols;
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + tile_offset(t, c, padded)),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(in + c)));
    for (; c < cols; c++) out[tile_offset(t, c, padded)] = f32_to_bf16(in[c]);
    for (; c < padded; c++) out[tile_offset(t, c, padded)] = 0;
  }
}

__attribute__((target("amx-tile,amx-bf16,avx512f"))) void amx_matmul_blocks(float* y, const uint16_t* x, int tokens, const WeightView& w,
                                                                             const float* bias, int64_t first_block, int64_t last_block,
                                                                             AmxScratch& scratch) {
  const int64_t cols = amx_padded_cols(w.cols);
  // Weight blocks are packed a group at a time, so that the group (in L2) meets each 32-token
  // slice of the activations while that slice is in L2 too: the activations are read from
  // memory once per group instead of once per block.
  const int64_t block_elements = 32 * cols;
  const int64_t group = std::clamp<int64_t>(kGroupBytes / (block_elements * 2), 1, 8);
  scratch.packed.resize(static_cast<size_t>(group * block_elements));
  TileConfig config;
  for (int i = 0; i < 8; i++) config.rows[i] = 16, config.bytes_per_row[i] = 64;
  _tile_loadconfig(&config);
  alignas(64) float c[32][32];
  for (int64_t g0 = first_block; g0 < last_block; g0 += group) {
    const int64_t blocks = std::min(group, last_block - g0);
    for (int64_t b = 0; b < blocks; b++)
      pack_weights(w, (g0 + b) * 32, cols, scratch.packed.data() + b * block_elements);
    for (int m = 0; m < tokens; m += 32) {
      const uint16_t* a0 = x + tile_offset(m, 0, cols);
      const uint16_t* a1 = x + tile_offset(m + 16, 0, cols);
      for (int64_t b = 0; b < blocks; b++) {
        const uint16_t* b0 = scratch.packed.data() + b * block_elements;
        const uint16_t* b1 = b0 + cols * 16;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t k = 0; k < cols; k += 32) {
          if (k + 64 < cols)  // two steps ahead: the tiles' loads otherwise wait on L2 (1.2x faster)
            for (int line = 0; line < 16; line++) {
              _mm_prefetch(reinterpret_cast<const char*>(a0 + (k + 64) * 16) + line * 64, _MM_HINT_T0);
              _mm_prefetch(reinterpret_cast<const char*>(a1 + (k + 64) * 16) + line * 64, _MM_HINT_T0);
              _mm_prefetch(reinterpret_cast<const char*>(b0 + (k + 64) * 16) + line * 64, _MM_HINT_T0);
              _mm_prefetch(reinterpret_cast<const char*>(b1 + (k + 64) * 16) + line * 64, _MM_HINT_T0);
            }
          _tile_loadd(4, a0 + k * 16, 64);
          _tile_loadd(6, b0 + k * 16, 64);
          _tile_loadd(5, a1 + k * 16, 64);
          _tile_loadd(7, b1 + k * 16, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, &c[0][0], 128);
        _tile_stored(1, &c[0][16], 128);
        _tile_stored(2, &c[16][0], 128);
        _tile_stored(3, &c[16][16], 128);
        const int64_t r0 = (g0 + b) * 32, valid_rows = std::min<int64_t>(32, w.rows - r0);
        for (int t = m; t < std::min(tokens, m + 32); t++)
          for (int64_t j = 0; j < valid_rows; j++) y[t * w.rows + r0 + j] = c[t - m][j] + (bias ? bias[r0 + j] : 0.0f);
      }
    }
  }
  _tile_release();
}

#else

bool amx_available() { return false; }
void amx_activations(const float*, int, int64_t, uint16_t*) {}
void amx_matmul_blocks(float*, const uint16_t*, int, const WeightView&, const float*, int64_t, int64_t, AmxScratch&) {}

#endif

}  // namespace lw
