// The CPU backend: a thread pool across cores, inner loops vectorised by the compiler for the
// best instruction set the CPU offers (function clones chosen at load time).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define LW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LW_CLONES
#endif

#include "backend/amx.h"
#include "backend/backend.h"
#include "backend/thread_pool.h"
#include "common/error.h"

namespace lw {
namespace {

LW_CLONES float dot(const float* a, const float* b, int64_t n) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; i++) sum += a[i] * b[i];
  return sum;
}

// Four dot products sharing one pass over x: x is loaded once for four weight rows.
LW_CLONES void dot4(const float* x, const float* w0, const float* w1, const float* w2, const float* w3, int64_t n,
                    float* out) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < n; i++) {
    s0 += x[i] * w0[i];
    s1 += x[i] * w1[i];
    s2 += x[i] * w2[i];
    s3 += x[i] * w3[i];
  }
  out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

// Sixteen dot products: four tokens against four weight rows, each load feeding four FMAs.
LW_CLONES void dot4x4(const float* x0, const float* x1, const float* x2, const float* x3, const float* const* w, int64_t n,
                      float* out) {
  const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  float s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
  float s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)
  for (int64_t i = 0; i < n; i++) {
    s00 += x0[i] * w0[i], s01 += x0[i] * w1[i], s02 += x0[i] * w2[i], s03 += x0[i] * w3[i];
    s10 += x1[i] * w0[i], s11 += x1[i] * w1[i], s12 += x1[i] * w2[i], s13 += x1[i] * w3[i];
    s20 += x2[i] * w0[i], s21 += x2[i] * w1[i], s22 += x2[i] * w2[i], s23 += x2[i] * w3[i];
    s30 += x3[i] * w0[i], s31 += x3[i] * w1[i], s32 += x3[i] * w2[i], s33 += x3[i] * w3[i];
  }
  const float sums[16] = {s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33};
  for (int i = 0; i < 16; i++) out[i] = sums[i];
}

LW_CLONES void axpy(float* y, float a, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

LW_CLONES void bf16_row_to_f32(const uint16_t* in, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    uint32_t bits = static_cast<uint32_t>(in[i]) << 16;
    std::memcpy(&out[i], &bits, 4);
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) void f16_row_to_f32_f16c(const uint16_t* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; i++) out[i] = f16_to_f32(in[i]);
}
bool cpu_has_f16c_and_avx2() {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && __builtin_cpu_supports("avx2");
}
const bool kHasF16c = cpu_has_f16c_and_avx2();
#endif

void f16_row_to_f32(const uint16_t* in, float* out, int64_t n) {
#if defined(__x86_64__)
  if (kHasF16c) return f16_row_to_f32_f16c(in, out, n);
#endif
  for (int64_t i = 0; i < n; i++) out[i] = f16_to_f32(in[i]);
}

#if defined(__x86_64__)
// Decode: four F16 or BF16 weight rows against one token, converted in registers (no scratch
// row is written and read back, which halves the bytes a decode step moves through the caches).
template <DType kType>
__attribute__((target("avx512f"))) inline __m512 load16_as_f32(const uint16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  // Zero-masked forms: the plain intrinsics draw false "uninitialized" warnings from GCC 12.
  if constexpr (kType == DType::F16) return _mm512_maskz_cvtph_ps(0xFFFF, bits);
  else return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, _mm512_maskz_cvtepu16_epi32(0xFFFF, bits), 16));
}

// Horizontal sum (the intrinsic _mm512_reduce_add_ps draws a false GCC 12 warning).
__attribute__((target("avx512f"))) inline float sum16(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float sum = 0;
  for (float lane : lanes) sum += lane;
  return sum;
}

template <DType kType>
__attribute__((target("avx512f"))) void dot4_half_avx512(const float* x, const uint16_t* const* w, int64_t n, float* out) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    s0 = _mm512_fmadd_ps(xv, load16_as_f32<kType>(w[0] + i), s0);
    s1 = _mm512_fmadd_ps(xv, load16_as_f32<kType>(w[1] + i), s1);
    s2 = _mm512_fmadd_ps(xv, load16_as_f32<kType>(w[2] + i), s2);
    s3 = _mm512_fmadd_ps(xv, load16_as_f32<kType>(w[3] + i), s3);
  }
  const __m512 sums[4] = {s0, s1, s2, s3};
  const auto widen = kType == DType::F16 ? f16_to_f32 : bf16_to_f32;
  for (int r = 0; r < 4; r++) {
    float sum = sum16(sums[r]);
    for (int64_t j = i; j < n; j++) sum += x[j] * widen(w[r][j]);
    out[r] = sum;
  }
}

// Four tokens against four rows already converted to float32 (prefill: each row converted once
// per product, not once per token). Each output is accumulated exactly as dot4_half_avx512
// accumulates it (16 lanes, the same FMA order, sum16, then the tail; the conversion is exact),
// so a token's result does not depend on how the tokens of a pass are grouped.
__attribute__((target("avx512f"))) void dot4x4_converted_avx512(const float* const* x, const float* const* w, int64_t n,
                                                                float* out) {
  __m512 s[4][4];
  for (auto& row : s)
    for (auto& lane : row) lane = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 w0 = _mm512_loadu_ps(w[0] + i), w1 = _mm512_loadu_ps(w[1] + i), w2 = _mm512_loadu_ps(w[2] + i),
                 w3 = _mm512_loadu_ps(w[3] + i);
    for (int t = 0; t < 4; t++) {
      const __m512 xv = _mm512_loadu_ps(x[t] + i);
      s[t][0] = _mm512_fmadd_ps(xv, w0, s[t][0]);
      s[t][1] = _mm512_fmadd_ps(xv, w1, s[t][1]);
      s[t][2] = _mm512_fmadd_ps(xv, w2, s[t][2]);
      s[t][3] = _mm512_fmadd_ps(xv, w3, s[t][3]);
    }
  }
  for (int t = 0; t < 4; t++)
    for (int r = 0; r < 4; r++) {
      float sum = sum16(s[t][r]);
      for (int64_t j = i; j < n; j++) sum += x[t][j] * w[r][j];
      out[t * 4 + r] = sum;
    }
}

const bool kHasAvx512 = __builtin_cpu_supports("avx512f");
#endif

// A pointer to row r of w as float32: the row itself, or a conversion into `scratch`.
const float* row_as_f32(const WeightView& w, int64_t r, float* scratch) {
  const char* base = static_cast<const char*>(w.data) + static_cast<size_t>(r * w.cols) * dtype_size(w.dtype);
  switch (w.dtype) {
    case DType::F32: return reinterpret_cast<const float*>(base);
    case DType::F16: f16_row_to_f32(reinterpret_cast<const uint16_t*>(base), scratch, w.cols); return scratch;
    case DType::BF16: bf16_row_to_f32(reinterpret_cast<const uint16_t*>(base), scratch, w.cols); return scratch;
  }
  return nullptr;
}

std::vector<float> vector_as_f32(const WeightView& w) {
  std::vector<float> out(static_cast<size_t>(w.rows * w.cols));
  convert_to_f32(w.data, w.dtype, out.size(), out.data());
  return out;
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads)
      : pool_(threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))),
        scratch_(static_cast<size_t>(pool_.size())) {}

  const char* name() const override { return "cpu"; }
  int threads() const override { return pool_.size(); }
  void set_compute_dtype(DType dtype) override { compute_ = dtype; }
  DType compute_dtype() const override { return compute_; }
  const char* matrix_units() const override { return amx_available() ? "amx" : ""; }

  float* allocate(size_t floats) override {
    size_t bytes = (std::max<size_t>(floats, 1) * sizeof(float) + 63) / 64 * 64;
    void* memory = std::aligned_alloc(64, bytes);
    if (!memory) fail("out of memory allocating " + std::to_string(bytes) + " bytes of activations");
    std::memset(memory, 0, bytes);
    return static_cast<float*>(memory);
  }
  void release(float* buffer) override { std::free(buffer); }

  void matmul(float* y, const float* x, int tokens, const WeightView& w, const WeightView* bias) override {
    const int64_t rows = w.rows, cols = w.cols;
    std::vector<float> bias_f32 = bias ? vector_as_f32(*bias) : std::vector<float>();
    if (compute_ == DType::BF16 && tokens >= kAmxMinTokens && amx_available())
      return matmul_amx(y, x, tokens, w, bias ? bias_f32.data() : nullptr);
    const int64_t blocks = (rows + 3) / 4;
    pool_.parallel_for(blocks, [&](int64_t first, int64_t last, int thread) {
      std::vector<float>& scratch = scratch_[static_cast<size_t>(thread)];
      if (scratch.size() < static_cast<size_t>(4 * cols)) scratch.resize(static_cast<size_t>(4 * cols));
      for (int64_t block = first; block < last; block++) {
        const int64_t r0 = block * 4, count = std::min<int64_t>(4, rows - r0);
#if defined(__x86_64__)
        if (w.dtype != DType::F32 && kHasAvx512) {  // F16/BF16 rows converted in registers
          const uint16_t* half_rows[4];
          for (int64_t i = 0; i < 4; i++)
            half_rows[i] = static_cast<const uint16_t*>(w.data) + (r0 + std::min(i, count - 1)) * cols;
          const bool f16 = w.dtype == DType::F16;
          int t = 0;
          const float* converted[4] = {};
          if (tokens >= 4)
            for (int64_t i = 0; i < 4; i++) converted[i] = row_as_f32(w, r0 + std::min(i, count - 1), scratch.data() + i * cols);
          for (; t + 4 <= tokens; t += 4) {
            float out[16];
            const float* xs[4] = {x + t * cols, x + (t + 1) * cols, x + (t + 2) * cols, x + (t + 3) * cols};
            dot4x4_converted_avx512(xs, converted, cols, out);
            for (int j = 0; j < 4; j++)
              for (int64_t i = 0; i < count; i++) y[(t + j) * rows + r0 + i] = out[j * 4 + i] + (bias ? bias_f32[r0 + i] : 0.0f);
          }
          for (; t < tokens; t++) {
            float out[4];
            if (f16) dot4_half_avx512<DType::F16>(x + t * cols, half_rows, cols, out);
            else dot4_half_avx512<DType::BF16>(x + t * cols, half_rows, cols, out);
            for (int64_t i = 0; i < count; i++) y[t * rows + r0 + i] = out[i] + (bias ? bias_f32[r0 + i] : 0.0f);
          }
          continue;
        }
#endif
        const float* row[4];
        for (int64_t i = 0; i < 4; i++) row[i] = row_as_f32(w, r0 + std::min(i, count - 1), scratch.data() + i * cols);
        int t = 0;
        for (; t + 4 <= tokens; t += 4) {
          float out[16];
          dot4x4(x + t * cols, x + (t + 1) * cols, x + (t + 2) * cols, x + (t + 3) * cols, row, cols, out);
          for (int j = 0; j < 4; j++)
            for (int64_t i = 0; i < count; i++) y[(t + j) * rows + r0 + i] = out[j * 4 + i] + (bias ? bias_f32[r0 + i] : 0.0f);
        }
        for (; t < tokens; t++) {
          float out[4];
          dot4(x + t * cols, row[0], row[1], row[2], row[3], cols, out);
          for (int64_t i = 0; i < count; i++) y[t * rows + r0 + i] = out[i] + (bias ? bias_f32[r0 + i] : 0.0f);
        }
      }
    });
  }

  void rmsnorm(float* y, const float* x, int tokens, const WeightView& weight, float eps) override {
    const int64_t dim = weight.cols * weight.rows;
    std::vector<float> gain = vector_as_f32(weight);
    pool_.parallel_for(tokens, [&](int64_t first, int64_t last, int) {
      for (int64_t t = first; t < last; t++) {
        const float* in = x + t * dim;
        float* out = y + t * dim;
        float mean_square = dot(in, in, dim) / static_cast<float>(dim);
        float scale = 1.0f / std::sqrt(mean_square + eps);
        for (int64_t i = 0; i < dim; i++) out[i] = gain[i] * (in[i] * scale);
      }
    });
  }

  void rope(float* x, const TokenPlacement& placement, int heads, int head_dim, const float* inverse_frequencies) override {
    const int half = head_dim / 2;
    pool_.parallel_for(placement.count, [&](int64_t first, int64_t last, int) {
      std::vector<float> cosines(half), sines(half);
      for (int64_t t = first; t < last; t++) {
        for (int i = 0; i < half; i++) {
          // The angle is rounded to float32 as in transformers; cos/sin are then exact to 1 ulp.
          float angle = static_cast<float>(placement.positions[t]) * inverse_frequencies[i];
          cosines[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
          sines[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
        }
        for (int h = 0; h < heads; h++) {
          float* v = x + (t * heads + h) * head_dim;
          for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cosines[i] - b * sines[i];
            v[i + half] = b * cosines[i] + a * sines[i];
          }
        }
      }
    });
  }

  void store_kv(const KvLayer& cache, const float* k, const float* v, const TokenPlacement& placement) override {
    for (int t = 0; t < placement.count; t++) {
      const size_t at = cache.at(placement.sequences[t], placement.positions[t]);
      std::memcpy(cache.k + at, k + static_cast<size_t>(t) * cache.kv_dim, cache.kv_dim * sizeof(float));
      std::memcpy(cache.v + at, v + static_cast<size_t>(t) * cache.kv_dim, cache.kv_dim * sizeof(float));
    }
  }

  void attention(float* out, const float* q, const KvLayer& cache, const TokenPlacement& placement, int heads,
                 int kv_heads, int head_dim) override {
    constexpr int kTile = 64;
    const int group = heads / kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const int64_t tasks = static_cast<int64_t>(placement.count) * heads;
    pool_.parallel_for(tasks, [&](int64_t first, int64_t last, int) {
      std::vector<float> scores(kTile), accumulator(static_cast<size_t>(head_dim));
      for (int64_t task = first; task < last; task++) {
        const int t = static_cast<int>(task / heads), h = static_cast<int>(task % heads);
        const float* query = q + (static_cast<int64_t>(t) * heads + h) * head_dim;
        const int sequence = placement.sequences[t], length = placement.positions[t] + 1;
        const size_t head_offset = static_cast<size_t>(h / group) * head_dim;
        float running_max = -std::numeric_limits<float>::infinity(), running_sum = 0;
        std::fill(accumulator.begin(), accumulator.end(), 0.0f);
        for (int start = 0; start < length; start += kTile) {
          const int count = std::min(kTile, length - start);
          float tile_max = -std::numeric_limits<float>::infinity();
          for (int j = 0; j < count; j++) {
            scores[j] = dot(query, cache.k + cache.at(sequence, start + j) + head_offset, head_dim) * scale;
            tile_max = std::max(tile_max, scores[j]);
          }
          const float new_max = std::max(running_max, tile_max);
          const float correction = std::exp(running_max - new_max);  // 0 on the first tile
          running_sum *= correction;
          for (int d = 0; d < head_dim; d++) accumulator[d] *= correction;
          for (int j = 0; j < count; j++) {
            const float weight = std::exp(scores[j] - new_max);
            running_sum += weight;
            axpy(accumulator.data(), weight, cache.v + cache.at(sequence, start + j) + head_offset, head_dim);
          }
          running_max = new_max;
        }
        float* result = out + (static_cast<int64_t>(t) * heads + h) * head_dim;
        for (int d = 0; d < head_dim; d++) result[d] = accumulator[d] / running_sum;
      }
    });
  }

  void swiglu(float* gate, const float* up, size_t n) override {
    pool_.parallel_for(static_cast<int64_t>(n), [&](int64_t first, int64_t last, int) {
      for (int64_t i = first; i < last; i++) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    }, 4096);
  }

  void add(float* y, const float* x, size_t n) override {
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] += x[i];
  }

 private:
  // Below this many tokens a product is bound by reading the weights, not by arithmetic.
  static constexpr int kAmxMinTokens = 16;

  void matmul_amx(float* y, const float* x, int tokens, const WeightView& w, const float* bias) {
    const int64_t cols = amx_padded_cols(w.cols);
    activations_bf16_.assign(static_cast<size_t>(amx_padded_tokens(tokens) * cols), 0);
    pool_.parallel_for((tokens + 15) / 16, [&](int64_t first, int64_t last, int) {  // whole tiles of 16 tokens
      const int64_t begin = first * 16, end = std::min<int64_t>(last * 16, tokens);
      amx_activations(x + begin * w.cols, static_cast<int>(end - begin), w.cols, activations_bf16_.data() + begin * cols);
    });
    pool_.parallel_for((w.rows + 31) / 32, [&](int64_t first, int64_t last, int thread) {
      std::vector<uint16_t>& packed = packed_[static_cast<size_t>(thread)];
      for (int64_t block = first; block < last; block++)
        amx_matmul_block(y, activations_bf16_.data(), tokens, w, bias, block * 32, packed);
    });
  }

  ThreadPool pool_;
  DType compute_ = DType::F32;
  std::vector<uint16_t> activations_bf16_;
  std::vector<std::vector<uint16_t>> packed_ = std::vector<std::vector<uint16_t>>(static_cast<size_t>(pool_.size()));
  std::vector<std::vector<float>> scratch_;  // per thread: weight rows converted to float32
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace lw
