// Weight types: how stored weights are laid out, in files, in split shards, in memory and in the
// kernels. F32, F16 and BF16 are plain elements; the rest are ggml's blocks (a fixed number of
// elements sharing scales, stored in a fixed number of bytes), kept as stored and computed on
// directly. This one table is what the checkpoint reader, the planner, the split writer and the
// kernels size and name them by; format/dequantize.h holds their reference decoding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace lw {

enum class DType : uint8_t { F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS };
inline constexpr int kDTypeCount = 15;

struct DTypeFormat {
  DType dtype;
  const char* name;        // "F32", "Q4_K": safetensors' and ggml's spelling
  uint32_t ggml_type;      // its number in GGUF files
  uint32_t block_elements; // 1 for the float types
  uint32_t block_bytes;
};
const DTypeFormat& dtype_format(DType dtype);
// True for the block types (everything but F32, F16, BF16).
bool dtype_is_quantized(DType dtype);
// Bytes per element of a float type; for block types use dtype_row_bytes.
size_t dtype_size(DType dtype);
// Bytes that `elements` values take. Throws lw::Error when elements is not a multiple of the
// block size or the size overflows.
uint64_t dtype_row_bytes(DType dtype, uint64_t elements);
const char* dtype_name(DType dtype);  // "F32", "F16", "BF16", "Q8_0", ...
std::optional<DType> dtype_from_name(const std::string& name);   // any weight type's name
std::optional<DType> dtype_from_ggml(uint32_t ggml_type);        // nullopt: not a weight type
// "F32, F16, BF16, Q8_0, ...": every weight type, for messages.
const std::string& dtype_names();
// "f32"|"float32", "f16"|"float16", "bf16"|"bfloat16" (as in --dtype and torch_dtype)
std::optional<DType> dtype_from_user(const std::string& name);

float f16_to_f32(uint16_t bits);
float bf16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);   // round to nearest even, overflow to inf, NaN kept
uint16_t f32_to_bf16(float value);  // round to nearest even, NaN kept

// dst[i] = float(src[i]) for n elements of the given type (any type: blocks are dequantized, n a
// multiple of the block size).
void convert_to_f32(const void* src, DType dtype, size_t n, float* dst);
// Converts n elements from any type to a float type (used when rewriting shards).
void convert(const void* src, DType from, void* dst, DType to, size_t n);

}  // namespace lw
