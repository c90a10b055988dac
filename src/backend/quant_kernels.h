// Products of block-quantized weight rows (format/dtype.h: Q8_0 .. IQ4_XS) with activations
// quantized per block, as integer dot products. The CPU backend uses them for products of few
// tokens (decode), where reading the weights is what costs; many tokens go through float tiles.
// Compiled once per instruction-set level like cpu_kernels.h. Backend-internal.
//
// Precision: every 32 activations share one float32 scale d = max|x| / 127 and become
// int8 q = x * (1 / d) rounded to nearest even (the same at every level); the integer products of
// a block are exact, and each
// block's sum is scaled in float32 by the weight's scales and d. Finer than llama.cpp's own
// activation blocks (Q8_0: one float16 scale per 32; Q8_K: one float32 scale per 256).
#pragma once
#include <cstdint>

#include "backend/cpu_kernels.h"
#include "format/dtype.h"

namespace lw::cpu {

inline constexpr int kActivationBlock = 32;

// One token's activations, n values (n a multiple of 32), quantized for the integer products.
struct QuantizedActivations {
  const int8_t* q = nullptr;       // n values
  const float* scales = nullptr;   // n / 32: value i is q[i] * scales[i / 32]
  const int32_t* sums = nullptr;   // n / 16: sums[j] = q[16 j] + ... + q[16 j + 15]
};

struct QuantKernels {
  // q, scales, sums as QuantizedActivations describes, for n values of x (n a multiple of 32).
  void (*quantize)(const float* x, int64_t n, int8_t* q, float* scales, int32_t* sums);
  // dot[type](row, x, n): the product of one weight row of n values (n a multiple of the type's
  // block) stored as that type's blocks, with x. Null for F32, F16 and BF16.
  float (*dot[kDTypeCount])(const void* row, const QuantizedActivations& x, int64_t n);
};

const QuantKernels& quant_kernels(Level level);

}  // namespace lw::cpu
