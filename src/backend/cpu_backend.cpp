// The CPU backend: a thread pool across cores running the kernels of the best instruction-set
// level the CPU offers (cpu_kernels.h), and AMX tiles for BF16 products of many tokens (amx.h).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <cblas.h>

#include "backend/amx.h"
#include "backend/backend.h"
#include "backend/cpu_kernels.h"
#include "backend/quant_kernels.h"
#include "backend/thread_pool.h"
#include "common/error.h"
#include "common/system.h"

namespace lw {
namespace cpu {

extern const Kernels kPortableKernels;
#if defined(__x86_64__)
extern const Kernels kAvx2Kernels, kAvx512Kernels;
#endif

const char* level_name(Level level) {
  switch (level) {
    case Level::Portable: return "portable";
    case Level::Avx2: return "avx2";
    case Level::Avx512: return "avx512";
    case Level::Amx: return "amx";
  }
  return "?";
}

std::optional<Level> parse_level(const std::string& name) {
  for (Level level : {Level::Portable, Level::Avx2, Level::Avx512, Level::Amx})
    if (name == level_name(level)) return level;
  return std::nullopt;
}

namespace {

Level best_level_of_this_cpu() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512 && amx_available()) return Level::Amx;
  if (avx512) return Level::Avx512;
  if (avx2) return Level::Avx2;
#endif
  return Level::Portable;
}

}  // namespace

Level detect_level() {
  static const Level best = best_level_of_this_cpu();
  const char* cap = std::getenv("LAYERWISE_CPU");
  if (!cap || !*cap) return best;
  const std::optional<Level> requested = parse_level(cap);
  if (!requested) fail(std::string("LAYERWISE_CPU=") + cap + ": unknown kernel level (portable, avx2, avx512 or amx)");
  return std::min(best, *requested);
}

const Kernels& kernels(Level level) {
#if defined(__x86_64__)
  if (level >= Level::Avx512) return kAvx512Kernels;
  if (level == Level::Avx2) return kAvx2Kernels;
#endif
  (void)level;
  return kPortableKernels;
}

}  // namespace cpu

namespace {

// A pointer to row r of w as float32: the row itself, or its conversion into `scratch`.
const float* row_as_f32(const cpu::Kernels& kernels, const WeightView& w, int64_t r, float* scratch) {
  const uint64_t row_bytes = dtype_row_bytes(w.dtype, static_cast<uint64_t>(w.cols));
  const char* base = static_cast<const char*>(w.data) + static_cast<uint64_t>(r) * row_bytes;
  if (w.dtype == DType::F32) return reinterpret_cast<const float*>(base);
  if (dtype_is_quantized(w.dtype)) {
    convert_to_f32(base, w.dtype, static_cast<size_t>(w.cols), scratch);
    return scratch;
  }
  kernels.half_to_f32(reinterpret_cast<const uint16_t*>(base), w.dtype == DType::F16, scratch, w.cols);
  return scratch;
}

std::vector<float> vector_as_f32(const WeightView& w) {
  std::vector<float> out(static_cast<size_t>(w.rows * w.cols));
  convert_to_f32(w.data, w.dtype, out.size(), out.data());
  return out;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int threads, cpu::Level level)
      : pool_(threads > 0 ? threads : usable_cores()),
        level_(level),
        kernels_(cpu::kernels(level)),
        quant_kernels_(cpu::quant_kernels(level)),
        scratch_(static_cast<size_t>(pool_.size())) {
    openblas_set_num_threads(1);  // each of our threads calls it on its own rows
  }

  const char* name() const override { return "cpu"; }
  int threads() const override { return pool_.size(); }
  const char* kernel_set() const override { return cpu::level_name(level_); }
  void set_compute_dtype(DType dtype) override { compute_ = dtype; }
  DType compute_dtype() const override { return compute_; }
  const char* matrix_units() const override { return level_ == cpu::Level::Amx ? "amx" : ""; }

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
    if (compute_ == DType::BF16 && tokens >= kAmxMinTokens && level_ == cpu::Level::Amx && !dtype_is_quantized(w.dtype))
      return matmul_amx(y, x, tokens, w, bias ? bias_f32.data() : nullptr);
    if (compute_ == DType::Q8_0 && dtype_is_quantized(w.dtype) && quant_kernels_.dot[static_cast<int>(w.dtype)])
      return matmul_quantized(y, x, tokens, w, bias ? bias_f32.data() : nullptr);
    if (tokens >= kBlasMinTokens && level_ >= cpu::Level::Avx2) return matmul_blas(y, x, tokens, w, bias ? bias_f32.data() : nullptr);
    const bool half = w.dtype == DType::F16 || w.dtype == DType::BF16, f16 = w.dtype == DType::F16;
    pool_.parallel_for((rows + 3) / 4, [&](int64_t first, int64_t last, int thread) {
      std::vector<float>& scratch = scratch_[static_cast<size_t>(thread)];
      if (scratch.size() < static_cast<size_t>(4 * cols)) scratch.resize(static_cast<size_t>(4 * cols));
      for (int64_t block = first; block < last; block++) {
        const int64_t r0 = block * 4, count = std::min<int64_t>(4, rows - r0);
        auto store = [&](int t, const float* out) {
          for (int64_t i = 0; i < count; i++) y[t * rows + r0 + i] = out[i] + (bias ? bias_f32[r0 + i] : 0.0f);
        };
        // Groups of four tokens use rows widened to float32 once; the rest read half rows directly.
        const float* row[4] = {};
        if (!half || tokens >= 4)  // (float32 or blocks widened to float32)
          for (int64_t i = 0; i < 4; i++) row[i] = row_as_f32(kernels_, w, r0 + std::min(i, count - 1), scratch.data() + i * cols);
        int t = 0;
        for (; t + 4 <= tokens; t += 4) {
          float out[16];
          const float* xs[4] = {x + t * cols, x + (t + 1) * cols, x + (t + 2) * cols, x + (t + 3) * cols};
          kernels_.dot4x4(xs, row, cols, out);
          for (int j = 0; j < 4; j++) store(t + j, out + j * 4);
        }
        for (; t < tokens; t++) {
          float out[4];
          if (half) {
            const uint16_t* half_rows[4];
            for (int64_t i = 0; i < 4; i++) half_rows[i] = static_cast<const uint16_t*>(w.data) + (r0 + std::min(i, count - 1)) * cols;
            kernels_.dot4_half(x + t * cols, half_rows, cols, f16, out);
          } else {
            kernels_.dot4(x + t * cols, row, cols, out);
          }
          store(t, out);
        }
      }
    });
  }

  void rmsnorm(float* y, const float* x, int tokens, const WeightView& weight, float eps) override {
    const int64_t dim = weight.cols * weight.rows;
    std::vector<float> gain = vector_as_f32(weight);
    pool_.parallel_for(tokens, [&](int64_t first, int64_t last, int) {
      for (int64_t t = first; t < last; t++) kernels_.rmsnorm(y + t * dim, x + t * dim, gain.data(), dim, eps);
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
    check_kv_dtype(cache.dtype);
    const size_t kv_dim = static_cast<size_t>(cache.kv_dim);
    if (cache.dtype == DType::F32) {
      for (int t = 0; t < placement.count; t++) {
        const size_t at = cache.at(placement.sequences[t], placement.positions[t]);
        std::memcpy(static_cast<float*>(cache.k) + at, k + static_cast<size_t>(t) * kv_dim, kv_dim * sizeof(float));
        std::memcpy(static_cast<float*>(cache.v) + at, v + static_cast<size_t>(t) * kv_dim, kv_dim * sizeof(float));
      }
      return;
    }
    // Rounded to nearest even (format/dtype.h), each token's row on one thread. A finite value
    // beyond F16's range would become infinite and every attention over it NaN: refused instead,
    // saying so (BF16 has float32's range).
    const bool f16 = cache.dtype == DType::F16;
    uint16_t (*const round)(float) = f16 ? f32_to_f16 : f32_to_bf16;
    std::atomic<bool> overflow{false};
    pool_.parallel_for(placement.count, [&](int64_t first, int64_t last, int) {
      for (int64_t t = first; t < last; t++) {
        const size_t at = cache.at(placement.sequences[t], placement.positions[t]);
        uint16_t* k_row = static_cast<uint16_t*>(cache.k) + at;
        uint16_t* v_row = static_cast<uint16_t*>(cache.v) + at;
        const float* k_in = k + static_cast<size_t>(t) * kv_dim;
        const float* v_in = v + static_cast<size_t>(t) * kv_dim;
        for (size_t i = 0; i < kv_dim; i++) k_row[i] = round(k_in[i]), v_row[i] = round(v_in[i]);
        if (!f16) continue;
        auto overflowed = [](uint16_t bits, float x) { return (bits & 0x7C00) == 0x7C00 && std::isfinite(x); };
        for (size_t i = 0; i < kv_dim; i++)
          if (overflowed(k_row[i], k_in[i]) || overflowed(v_row[i], v_in[i])) overflow = true;
      }
    });
    if (overflow)
      fail("a key or value is beyond the range of float16 (magnitude over 65504), so an F16 KV cache cannot hold it; "
           "run with --kv-dtype bf16 or f32");
  }

  // Work items: one kv head x a run of up to kAttentionRun consecutive tokens of one sequence,
  // with all the query heads that share that kv head (grouped-query attention), so each key
  // tile is loaded once for all of them.
  void attention(float* out, const float* q, const KvLayer& cache, const TokenPlacement& placement, int heads,
                 int kv_heads, int head_dim) override {
    constexpr int kAttentionRun = 16;
    const int group = heads / kv_heads;
    std::vector<std::pair<int, int>> runs;  // [first token, end)
    for (int t = 0; t < placement.count;) {
      int end = t + 1;
      while (end < placement.count && end - t < kAttentionRun && placement.sequences[end] == placement.sequences[t]) end++;
      runs.push_back({t, end});
      t = end;
    }
    // Later runs see more keys: alternate short and long ones so that each thread's contiguous
    // share of the work items holds about as many keys as the others'.
    std::vector<std::pair<int, int>> balanced;
    for (size_t i = 0, j = runs.size(); i < j; i++) {
      balanced.push_back(runs[i]);
      if (i < --j) balanced.push_back(runs[j]);
    }
    runs.swap(balanced);
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    check_kv_dtype(cache.dtype);
    const size_t element_bytes = dtype_size(cache.dtype);
    const char *keys = static_cast<const char*>(cache.k), *values = static_cast<const char*>(cache.v);
    pool_.parallel_for(static_cast<int64_t>(runs.size()) * kv_heads, [&](int64_t first, int64_t last, int thread) {
      AttentionScratch& scratch = attention_scratch_[static_cast<size_t>(thread)];
      for (int64_t task = first; task < last; task++) {
        const auto [begin, end] = runs[static_cast<size_t>(task / kv_heads)];
        const int kv_head = static_cast<int>(task % kv_heads), sequence = placement.sequences[begin];
        const int count = (end - begin) * group;
        scratch.queries.clear(), scratch.outputs.clear(), scratch.lengths.clear(), scratch.keys.clear(), scratch.values.clear();
        int longest = 0;
        for (int t = begin; t < end; t++)
          for (int h = kv_head * group; h < (kv_head + 1) * group; h++) {
            const int64_t at = (static_cast<int64_t>(t) * heads + h) * head_dim;
            scratch.queries.push_back(q + at);
            scratch.outputs.push_back(out + at);
            scratch.lengths.push_back(placement.positions[t] + 1);
            longest = std::max(longest, placement.positions[t] + 1);
          }
        const size_t head_offset = static_cast<size_t>(kv_head) * head_dim;
        for (int p = 0; p < longest; p++) {
          const size_t at = (cache.at(sequence, p) + head_offset) * element_bytes;
          scratch.keys.push_back(keys + at);
          scratch.values.push_back(values + at);
        }
        scratch.floats.resize(static_cast<size_t>(cpu::attention_scratch_floats(count, head_dim)));
        const cpu::AttentionWork work{count, head_dim, scale, scratch.queries.data(), scratch.outputs.data(),
                                      scratch.lengths.data(), scratch.keys.data(), scratch.values.data(), cache.dtype};
        kernels_.attend(work, scratch.floats.data());
      }
    });
  }

  void swiglu(float* gate, const float* up, size_t n) override {
    pool_.parallel_for(static_cast<int64_t>(n), [&](int64_t first, int64_t last, int) {
      kernels_.swiglu(gate + first, up + first, last - first);
    }, 4096);
  }

  void add(float* y, const float* x, size_t n) override {
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] += x[i];
  }

 private:
  // Below this many tokens a product is bound by reading the weights, not by arithmetic.
  static constexpr int kAmxMinTokens = 16;
  // From this many tokens OpenBLAS's packed sgemm beats the dot-product kernels (its sums are
  // ordered differently: a token's float32 result can differ in the last bits between a pass of
  // fewer tokens and one of more). Weight rows go to it in blocks, widened to float32 first.
  static constexpr int kBlasMinTokens = 48;
  static constexpr int64_t kBlasRows = 128;

  void matmul_blas(float* y, const float* x, int tokens, const WeightView& w, const float* bias) {
    const int64_t rows = w.rows, cols = w.cols;
    pool_.parallel_for((rows + kBlasRows - 1) / kBlasRows, [&](int64_t first, int64_t last, int thread) {
      std::vector<float>& scratch = scratch_[static_cast<size_t>(thread)];
      for (int64_t block = first; block < last; block++) {
        const int64_t r0 = block * kBlasRows, count = std::min(kBlasRows, rows - r0);
        const float* weights = static_cast<const float*>(w.data) + r0 * cols;
        if (w.dtype != DType::F32) {
          if (scratch.size() < static_cast<size_t>(count * cols)) scratch.resize(static_cast<size_t>(count * cols));
          for (int64_t r = 0; r < count; r++) row_as_f32(kernels_, w, r0 + r, scratch.data() + r * cols);
          weights = scratch.data();
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, static_cast<int>(count), static_cast<int>(cols), 1.0f, x,
                    static_cast<int>(cols), weights, static_cast<int>(cols), 0.0f, y + r0, static_cast<int>(rows));
        if (bias)
          for (int t = 0; t < tokens; t++)
            for (int64_t r = 0; r < count; r++) y[t * rows + r0 + r] += bias[r0 + r];
      }
    });
  }

  // Block weights against activations quantized per block: integer dot products at any number of
  // tokens (a token's result never depends on the others). Each thread takes chunks of rows and
  // runs them against the tokens a slice at a time, so the rows stay in L1 and the slice of
  // quantized activations in L2.
  void matmul_quantized(float* y, const float* x, int tokens, const WeightView& w, const float* bias) {
    const int64_t rows = w.rows, cols = w.cols;
    const size_t values = static_cast<size_t>(tokens) * static_cast<size_t>(cols);
    activations_q_.resize(values);
    activation_scales_.resize(values / cpu::kActivationBlock);
    activation_sums_.resize(values / 16);
    pool_.parallel_for(tokens, [&](int64_t first, int64_t last, int) {
      for (int64_t t = first; t < last; t++)
        quant_kernels_.quantize(x + t * cols, cols, activations_q_.data() + t * cols,
                                activation_scales_.data() + t * cols / cpu::kActivationBlock, activation_sums_.data() + t * cols / 16);
    });
    const auto dot = quant_kernels_.dot[static_cast<int>(w.dtype)];
    const uint64_t row_bytes = dtype_row_bytes(w.dtype, static_cast<uint64_t>(cols));
    constexpr int64_t kRowChunk = 8, kTokenSlice = 32;
    pool_.parallel_for((rows + kRowChunk - 1) / kRowChunk, [&](int64_t first, int64_t last, int) {
      for (int64_t chunk = first; chunk < last; chunk++) {
        const int64_t r0 = chunk * kRowChunk, r1 = std::min(rows, r0 + kRowChunk);
        for (int64_t t0 = 0; t0 < tokens; t0 += kTokenSlice)
          for (int64_t r = r0; r < r1; r++) {
            const void* row = static_cast<const char*>(w.data) + static_cast<uint64_t>(r) * row_bytes;
            for (int64_t t = t0; t < std::min<int64_t>(tokens, t0 + kTokenSlice); t++) {
              const cpu::QuantizedActivations activations{activations_q_.data() + t * cols,
                                                          activation_scales_.data() + t * cols / cpu::kActivationBlock,
                                                          activation_sums_.data() + t * cols / 16};
              y[t * rows + r] = dot(row, activations, cols) + (bias ? bias[r] : 0.0f);
            }
          }
      }
    }, 2);
  }

  void matmul_amx(float* y, const float* x, int tokens, const WeightView& w, const float* bias) {
    const int64_t cols = amx_padded_cols(w.cols);
    // Every real token's row is written below; the padding tokens' rows only feed output rows
    // that are never stored, so they are left as they are.
    activations_bf16_.resize(std::max(activations_bf16_.size(), static_cast<size_t>(amx_padded_tokens(tokens) * cols)));
    pool_.parallel_for((tokens + 15) / 16, [&](int64_t first, int64_t last, int) {  // whole tiles of 16 tokens
      const int64_t begin = first * 16, end = std::min<int64_t>(last * 16, tokens);
      amx_activations(x + begin * w.cols, static_cast<int>(end - begin), w.cols, activations_bf16_.data() + begin * cols);
    });
    pool_.parallel_for((w.rows + 31) / 32, [&](int64_t first, int64_t last, int thread) {
      amx_matmul_blocks(y, activations_bf16_.data(), tokens, w, bias, first, last, amx_scratch_[static_cast<size_t>(thread)]);
    });
  }

  static void check_kv_dtype(DType dtype) {
    if (!kv_dtype_supported(dtype))
      fail(std::string("internal error: a KV cache of ") + dtype_name(dtype) + " (the CPU backend keeps F32, F16 or BF16)");
  }

  struct AttentionScratch {
    std::vector<const float*> queries;
    std::vector<const void*> keys, values;
    std::vector<float*> outputs;
    std::vector<int> lengths;
    std::vector<float> floats;
  };

  ThreadPool pool_;
  cpu::Level level_;
  const cpu::Kernels& kernels_;
  const cpu::QuantKernels& quant_kernels_;
  DType compute_ = DType::F32;
  // matmul_quantized's activations, as quant_kernels.h's QuantizedActivations.
  std::vector<int8_t> activations_q_;
  std::vector<float> activation_scales_;
  std::vector<int32_t> activation_sums_;
  std::vector<uint16_t> activations_bf16_;
  std::vector<AmxScratch> amx_scratch_ = std::vector<AmxScratch>(static_cast<size_t>(pool_.size()));
  std::vector<std::vector<float>> scratch_;  // per thread: weight rows converted to float32
  std::vector<AttentionScratch> attention_scratch_ = std::vector<AttentionScratch>(static_cast<size_t>(pool_.size()));
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads, const std::string& kernels) {
  cpu::Level level = cpu::detect_level();
  if (!kernels.empty()) {
    const std::optional<cpu::Level> wanted = cpu::parse_level(kernels);
    if (!wanted) fail("unknown CPU kernel level '" + kernels + "' (portable, avx2, avx512 or amx)");
    if (*wanted > level) fail(std::string("this CPU cannot run the '") + kernels + "' kernels (the best it offers: " + cpu::level_name(level) + ")");
    level = *wanted;
  }
  return std::make_unique<CpuBackend>(threads, level);
}

}  // namespace lw
