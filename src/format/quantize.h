// Quantization of float rows into ggml's block formats (format/dtype.h): the inverse of
// format/dequantize.h, for `layerwise split --quantize`.
//
// The algorithms are the well-known reference ones of ggml, without an importance matrix (as
// llama-quantize runs without --imatrix):
//   - Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: one scale (and minimum) per 32 elements from the block's
//     absolute maximum (or range). Bit-identical to the gguf Python package's
//     gguf.quants.quantize (v0.19), which tests/test_quantize.cpp checks on goldens written by
//     scripts/make_quant_goldens.py.
//   - Q4_K, Q5_K: per 32-element sub-block an iterative search for the scale and minimum that
//     minimise a weighted squared error, then six-bit sub-block scales and minimums relative to
//     float16 super-block ones.
//   - Q6_K: per 16-element sub-block a search over candidate scales (least squares refit), then
//     eight-bit sub-block scales relative to a float16 super-block one.
//   - IQ4_NL, IQ4_XS: the non-linear 16-level table, with a search over 15 candidate scales per
//     32 elements (IQ4_XS adds six-bit sub-block scales under a float16 super-block one).
// Q2_K and Q3_K are not produced (they are read, not written).
//
// Every failure throws lw::Error: a type that cannot be produced, n not a multiple of the block
// size, a non-finite input value, or a block scale beyond float16's range.
#pragma once
#include <cstdint>

#include "format/dtype.h"

namespace lw {

// True for the block types quantize_row produces.
bool dtype_quantizable(DType type);

// out[0 .. dtype_row_bytes(type, n)) = x[0 .. n) in `type`'s blocks. For the float types
// (F32, F16, BF16) this is a plain conversion. `out` needs no alignment.
void quantize_row(DType type, const float* x, uint64_t n, void* out);

// The same for `rows` rows of `n` elements each, laid out one after another. Errors name the
// row, counting from `first_row`.
void quantize_rows(DType type, const float* x, uint64_t rows, uint64_t n, void* out, uint64_t first_row = 0);

}  // namespace lw
