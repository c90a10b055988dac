// Element types of stored weights, and exact conversions between them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace lw {

enum class DType : uint8_t { F32, F16, BF16 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // safetensors spelling: "F32", "F16", "BF16"
std::optional<DType> dtype_from_name(const std::string& name);  // safetensors spelling
// "f32"|"float32", "f16"|"float16", "bf16"|"bfloat16" (as in --dtype and torch_dtype)
std::optional<DType> dtype_from_user(const std::string& name);

float f16_to_f32(uint16_t bits);
float bf16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);   // round to nearest even, overflow to inf, NaN kept
uint16_t f32_to_bf16(float value);  // round to nearest even, NaN kept

// dst[i] = float(src[i]) for n elements of the given type.
void convert_to_f32(const void* src, DType dtype, size_t n, float* dst);
// Converts n elements between any two types (used when rewriting shards).
void convert(const void* src, DType from, void* dst, DType to, size_t n);

}  // namespace lw
