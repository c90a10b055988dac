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

struct TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Weight rows r0 .. r0+31 in the tiles' layout: two groups of 16 rows, each [cols/2][16][2] (pairs
// of consecutive columns of one row side by side, the 16 rows across a 64-byte tile row).
void pack_weights(const WeightView& w, int64_t r0, int64_t cols_padded, std::vector<uint16_t>& packed) {
  packed.assign(static_cast<size_t>(32 * cols_padded), 0);
  std::vector<uint16_t> row(static_cast<size_t>(cols_padded), 0);
  for (int j = 0; j < 32 && r0 + j < w.rows; j++) {
    const char* source = static_cast<const char*>(w.data) + static_cast<size_t>((r0 + j) * w.cols) * dtype_size(w.dtype);
    if (w.dtype == DType::BF16) std::memcpy(row.data(), source, static_cast<size_t>(w.cols) * 2);
    else convert(source, w.dtype, row.data(), DType::BF16, static_cast<size_t>(w.cols));
    const uint32_t* from = reinterpret_cast<const uint32_t*>(row.data());
    uint32_t* to = reinterpret_cast<uint32_t*>(packed.data()) + static_cast<size_t>(j / 16) * static_cast<size_t>(cols_padded / 2) * 16 + j % 16;
    for (int64_t pair = 0; pair < cols_padded / 2; pair++) to[pair * 16] = from[pair];
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

__attribute__((target("amx-tile,amx-bf16,avx512f"))) void amx_matmul_block(float* y, const uint16_t* x, int tokens,
                                                                            const WeightView& w, const float* bias, int64_t r0,
                                                                            std::vector<uint16_t>& scratch) {
  const int64_t cols = amx_padded_cols(w.cols);
  pack_weights(w, r0, cols, scratch);
  const uint16_t* b0 = scratch.data();
  const uint16_t* b1 = scratch.data() + static_cast<size_t>(cols) * 16;
  TileConfig config;
  for (int i = 0; i < 8; i++) config.rows[i] = 16, config.bytes_per_row[i] = 64;
  _tile_loadconfig(&config);
  alignas(64) float c[32][32];
  const int64_t valid_rows = std::min<int64_t>(32, w.rows - r0);
  for (int m = 0; m < tokens; m += 32) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const uint16_t* a0 = x + tile_offset(m, 0, cols);
    const uint16_t* a1 = x + tile_offset(m + 16, 0, cols);
    for (int64_t k = 0; k < cols; k += 32) {
      _tile_loadd(4, a0 + k * 16, 64);
      _tile_loadd(5, a1 + k * 16, 64);
      _tile_loadd(6, b0 + k * 16, 64);
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
    for (int t = m; t < std::min(tokens, m + 32); t++)
      for (int64_t j = 0; j < valid_rows; j++) y[t * w.rows + r0 + j] = c[t - m][j] + (bias ? bias[r0 + j] : 0.0f);
  }
  _tile_release();
}

#else

bool amx_available() { return false; }
void amx_activations(const float*, int, int64_t, uint16_t*) {}
void amx_matmul_block(float*, const uint16_t*, int, const WeightView&, const float*, int64_t, std::vector<uint16_t>&) {}

#endif

}  // namespace lw
