// The narrow interface between the runtime and whatever computes: a backend runs these few
// operations on activations in buffers it allocated and on weights staged by the runtime. The
// runtime never knows which backend it drives. The CPU backend is the only one so far.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "format/dtype.h"

namespace lw {

// A row-major matrix [rows, cols] (or a vector: rows = 1) in the dtype it was stored in.
struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
};

// Where one sequence's keys and values lie in a layer's cache. Its own positions
// first_position .. first_position + capacity - 1 are stored from `offset` (in elements of the
// cache's dtype) on, kv_dim elements each. Positions below first_position belong to sequence
// `parent` (a shared prefix, whose own positions start at 0) and are read there in place: several
// sequences can continue one prefix without copying it.
struct KvSequence {
  size_t offset = 0;
  int first_position = 0;
  int capacity = 0;
  int parent = -1;
};

// The element types a KV cache can hold: F32, or F16 / BF16 (half the memory; keys and values
// rounded to nearest even when stored, widened to float32 when read: attention computes in
// float32 either way).
inline bool kv_dtype_supported(DType dtype) { return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16; }

// The keys and values of one layer for every sequence, kv_dim elements of `dtype` per position.
struct KvLayer {
  void* k = nullptr;
  void* v = nullptr;
  int kv_dim = 0;
  const KvSequence* sequences = nullptr;
  DType dtype = DType::F32;

  // Offset (elements) of sequence s's position p, in k and v alike.
  size_t at(int s, int p) const {
    const KvSequence* sequence = &sequences[s];
    if (p < sequence->first_position) sequence = &sequences[sequence->parent];
    return sequence->offset + static_cast<size_t>(p - sequence->first_position) * static_cast<size_t>(kv_dim);
  }
};

// One forward pass's tokens: token t belongs to sequence sequences[t] at position positions[t].
struct TokenPlacement {
  int count = 0;
  const int32_t* positions = nullptr;
  const int32_t* sequences = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual int threads() const = 0;
  // Which of the backend's kernel sets runs (the CPU backend: "portable", "avx2", "avx512", "amx").
  virtual const char* kernel_set() const = 0;

  // Activation memory, owned by the backend (host memory for the CPU backend).
  virtual float* allocate(size_t floats) = 0;
  virtual void release(float* buffer) = 0;

  // The precision of matrix products: F32 (the default) multiplies in float32 (block weights
  // dequantized exactly); BF16 lets the backend round activations and weights to bfloat16 and
  // accumulate in float32 on matrix units (the CPU backend: AMX, for products of 16 tokens or
  // more); Q8_0 multiplies block weights as integers with activations quantized to int8 per 32
  // values (quant_kernels.h), float weights as F32. Other
  // operations stay float32.
  virtual void set_compute_dtype(DType dtype) = 0;
  virtual DType compute_dtype() const = 0;
  // Where BF16 products actually run on matrix units ("amx"), or "" when they fall back to F32.
  virtual const char* matrix_units() const = 0;

  // y[t, r] = sum_c x[t, c] * w[r, c] + bias[r]   for t < tokens, r < w.rows; bias may be null.
  virtual void matmul(float* y, const float* x, int tokens, const WeightView& w, const WeightView* bias) = 0;
  // y[t] = x[t] / rms(x[t]) * weight, row by row.
  virtual void rmsnorm(float* y, const float* x, int tokens, const WeightView& weight, float eps) = 0;
  // Rotates each head of x[t] ([heads * head_dim]) by its position, half-split ("rotate_half") layout.
  virtual void rope(float* x, const TokenPlacement& placement, int heads, int head_dim, const float* inverse_frequencies) = 0;
  // Writes the keys and values of these tokens into the cache at their sequence and position,
  // rounded to the cache's dtype (nearest even) when it is F16 or BF16.
  virtual void store_kv(const KvLayer& cache, const float* k, const float* v, const TokenPlacement& placement) = 0;
  // Causal attention of each token over its sequence's cached positions 0..position (those below
  // the sequence's first position from its parent), computed in tiles with an online softmax: no
  // score matrix is ever materialised. F16 / BF16 keys and values are widened to float32 as they
  // are read; the arithmetic is the same as on a float32 cache holding the rounded values.
  virtual void attention(float* out, const float* q, const KvLayer& cache, const TokenPlacement& placement, int heads,
                         int kv_heads, int head_dim) = 0;
  // gate = silu(gate) * up, elementwise.
  virtual void swiglu(float* gate, const float* up, size_t n) = 0;
  // y += x, elementwise.
  virtual void add(float* y, const float* x, size_t n) = 0;
};

// threads <= 0: all cores. kernels: "" for the best level the CPU offers (LAYERWISE_CPU=<level>
// in the environment caps it), or one of "portable", "avx2", "avx512", "amx" (fails when the CPU
// lacks it): every level computes the same operations, so tests run each.
std::unique_ptr<Backend> make_cpu_backend(int threads, const std::string& kernels = "");

}  // namespace lw
