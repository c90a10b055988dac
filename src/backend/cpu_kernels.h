// The CPU backend's inner loops, compiled once per instruction-set level (cpu_kernels_*.cpp each
// build cpu_kernels_impl.h with their own compiler flags) and picked at run time. Plain functions
// on raw pointers; the backend splits work across threads and calls them. Backend-internal.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "format/dtype.h"

namespace lw::cpu {

// Each level includes the ones before it. Amx adds AMX-BF16 tiles for BF16 products (amx.h) to
// the Avx512 kernels.
enum class Level { Portable, Avx2, Avx512, Amx };

const char* level_name(Level level);
std::optional<Level> parse_level(const std::string& name);  // "portable", "avx2", "avx512", "amx"
// The best level this CPU (and, for AMX, the operating system) allows. LAYERWISE_CPU=<level> in
// the environment caps it (fails naming the variable when the value is unknown).
Level detect_level();

// Keys per attention tile: scores of a query against one tile are computed, exponentiated and
// applied together (an online softmax across tiles).
constexpr int kAttentionTile = 64;

// One kv head's share of an attention: `count` queries (heads of the group, tokens of a run of
// one sequence), query i seeing keys/values 0 .. lengths[i] - 1. Keys and values are rows of
// head_dim elements of kv_dtype (F32, F16 or BF16), widened to float32 in registers as they are
// read; the arithmetic after that is the same for every dtype.
struct AttentionWork {
  int count = 0;
  int head_dim = 0;
  float scale = 1;
  const float* const* queries = nullptr;
  float* const* outputs = nullptr;
  const int* lengths = nullptr;
  const void* const* keys = nullptr;  // key row of position p, for p < max(lengths)
  const void* const* values = nullptr;
  DType kv_dtype = DType::F32;
};

struct Kernels {
  Level level;
  // Every product below accumulates each output the same way: 16 lanes over the columns in order
  // (lane l takes columns l, l + 16, ...), the lanes summed in order, then the tail; so a token's
  // result never depends on which kernel (how many tokens, rows) computed it.
  // out[t * 4 + r] = x[t] . w[r] for 4 tokens and 4 float32 rows of n columns.
  void (*dot4x4)(const float* const* x, const float* const* w, int64_t n, float* out);
  // out[r] = x . w[r] for one token.
  void (*dot4)(const float* x, const float* const* w, int64_t n, float* out);
  // The same on F16 (f16 = true) or BF16 rows, widened in registers.
  void (*dot4_half)(const float* x, const uint16_t* const* w, int64_t n, bool f16, float* out);
  // F16 / BF16 to float32.
  void (*half_to_f32)(const uint16_t* in, bool f16, float* out, int64_t n);
  // y = x * rsqrt(mean(x^2) + eps) * gain
  void (*rmsnorm)(float* y, const float* x, const float* gain, int64_t n, float eps);
  // gate = silu(gate) * up
  void (*swiglu)(float* gate, const float* up, int64_t n);
  // `scratch` holds attention_scratch_floats(work) floats.
  void (*attend)(const AttentionWork& work, float* scratch);
};

inline int64_t attention_scratch_floats(int count, int head_dim) {
  return static_cast<int64_t>(head_dim) * kAttentionTile + kAttentionTile + static_cast<int64_t>(count) * (head_dim + 2);
}

const Kernels& kernels(Level level);  // Amx gives the Avx512 set (AMX products live in amx.h)

}  // namespace lw::cpu
