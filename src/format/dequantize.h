// The reference dequantization of the weight types (format/dtype.h) to float32, keyed by ggml
// type number.
//
// The results are bit-identical to the gguf Python package's gguf.quants.dequantize (v0.19,
// numpy float32): every float16 scale is widened to float32 first, the per-sub-block scale
// products (d * sc, dmin * m) are formed before they multiply the quant (for IQ4_NL / IQ4_XS the
// int8 level its nibble selects), and the offset is added or subtracted last, each step rounded
// to float32 (dequantize.cpp is compiled with -ffp-contract=off so no multiply-add is fused).
// tests/gguf/test_dequantize.cpp checks this against goldens written by
// scripts/make_dequant_goldens.py.
//
// Handled: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
// IQ4_XS.
// Every failure (unsupported type, element count not a multiple of the block size) throws
// lw::Error.
#pragma once
#include <cstdint>

namespace lw {

// True for the types dequantize_row handles: the weight types of format/dtype.h (dtype_names()).
bool ggml_type_dequantizable(uint32_t ggml_type);

// dst[0..elements) = the values stored in src (ggml type, `elements` a multiple of its block
// size). src needs no alignment; src and dst must not overlap (see dequantize_in_place).
// Results are bit-identical to the gguf Python package's gguf.quants.dequantize (v0.19, numpy
// float32).
void dequantize_row(uint32_t ggml_type, const void* src, uint64_t elements, float* dst);

// The raw data of `elements` values of ggml_type lies at the END of the float buffer `buffer`
// (its last ggml_row_bytes(type, elements) bytes, i.e. starting at
// (char*)buffer + elements*4 - ggml_row_bytes(...)). Dequantizes it in place so
// buffer[0..elements) holds the floats. Works because every type takes at most 4 bytes per
// element: chunks of blocks are processed front to back, each copied to a small local array
// before its floats are written. A no-op for F32.
void dequantize_in_place(uint32_t ggml_type, float* buffer, uint64_t elements);

}  // namespace lw
