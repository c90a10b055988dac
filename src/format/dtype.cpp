#include "format/dtype.h"

#include <cstring>

#include "common/error.h"
#include "format/dequantize.h"

namespace lw {

namespace {

// Block sizes and bytes as ggml lays them out (ggml-common.h; gguf-py's GGML_QUANT_SIZES).
constexpr DTypeFormat kFormats[kDTypeCount] = {
    {DType::F32, "F32", 0, 1, 4},          {DType::F16, "F16", 1, 1, 2},
    {DType::BF16, "BF16", 30, 1, 2},       {DType::Q8_0, "Q8_0", 8, 32, 34},
    {DType::Q4_0, "Q4_0", 2, 32, 18},      {DType::Q4_1, "Q4_1", 3, 32, 20},
    {DType::Q5_0, "Q5_0", 6, 32, 22},      {DType::Q5_1, "Q5_1", 7, 32, 24},
    {DType::Q2_K, "Q2_K", 10, 256, 84},    {DType::Q3_K, "Q3_K", 11, 256, 110},
    {DType::Q4_K, "Q4_K", 12, 256, 144},   {DType::Q5_K, "Q5_K", 13, 256, 176},
    {DType::Q6_K, "Q6_K", 14, 256, 210},   {DType::IQ4_NL, "IQ4_NL", 20, 32, 18},
    {DType::IQ4_XS, "IQ4_XS", 23, 256, 136},
};

}  // namespace

const DTypeFormat& dtype_format(DType dtype) { return kFormats[static_cast<int>(dtype)]; }

bool dtype_is_quantized(DType dtype) { return dtype_format(dtype).block_elements > 1; }

size_t dtype_size(DType dtype) {
  if (dtype_is_quantized(dtype)) fail(std::string("dtype_size: ") + dtype_name(dtype) + " is a block type");
  return dtype_format(dtype).block_bytes;
}

uint64_t dtype_row_bytes(DType dtype, uint64_t elements) {
  const DTypeFormat& format = dtype_format(dtype);
  if (elements % format.block_elements != 0)
    fail(std::to_string(elements) + " elements of type " + format.name + " are not a multiple of its block size " +
         std::to_string(format.block_elements));
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(elements / format.block_elements, uint64_t{format.block_bytes}, &bytes))
    fail(std::to_string(elements) + " elements of type " + format.name + " are too many to address");
  return bytes;
}

const char* dtype_name(DType dtype) { return dtype_format(dtype).name; }

std::optional<DType> dtype_from_name(const std::string& name) {
  for (const DTypeFormat& format : kFormats)
    if (name == format.name) return format.dtype;
  return std::nullopt;
}

std::optional<DType> dtype_from_ggml(uint32_t ggml_type) {
  for (const DTypeFormat& format : kFormats)
    if (ggml_type == format.ggml_type) return format.dtype;
  return std::nullopt;
}

const std::string& dtype_names() {
  static const std::string names = [] {
    std::string text;
    for (const DTypeFormat& format : kFormats) text += (text.empty() ? "" : ", ") + std::string(format.name);
    return text;
  }();
  return names;
}

std::optional<DType> dtype_from_user(const std::string& name) {
  if (name == "f32" || name == "float32") return DType::F32;
  if (name == "f16" || name == "float16") return DType::F16;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  return std::nullopt;
}

static float bits_to_f32(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

static uint32_t f32_to_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return bits;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  if (exponent == 0x1f) return bits_to_f32(sign | 0x7f800000 | (mantissa << 13));  // inf, NaN
  if (exponent == 0) {
    if (mantissa == 0) return bits_to_f32(sign);
    // Subnormal: value = mantissa * 2^-24, exact in f32.
    float value = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -value : value;
  }
  return bits_to_f32(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

float bf16_to_f32(uint16_t bits) { return bits_to_f32(static_cast<uint32_t>(bits) << 16); }

uint16_t f32_to_bf16(float value) {
  uint32_t bits = f32_to_bits(value);
  if ((bits & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  bits += 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

uint16_t f32_to_f16(float value) {
  uint32_t bits = f32_to_bits(value);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  uint32_t magnitude = bits & 0x7fffffff;
  if (magnitude > 0x7f800000) return static_cast<uint16_t>(sign | 0x7e00);  // NaN
  if (magnitude >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // rounds to inf
  if (magnitude < 0x38800000) {
    // Result is subnormal or zero: round value / 2^-24 to the nearest even integer.
    if (magnitude < 0x33000000) return sign;  // below half the smallest subnormal
    uint32_t exponent = magnitude >> 23;
    uint32_t mantissa = (magnitude & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - exponent;  // bits dropped to land on 2^-24 units
    uint32_t result = mantissa >> shift;
    uint32_t remainder = mantissa & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (remainder > half || (remainder == half && (result & 1))) result++;
    return static_cast<uint16_t>(sign | result);
  }
  uint32_t rounded = magnitude + 0xfff + ((magnitude >> 13) & 1);
  return static_cast<uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
}

void convert_to_f32(const void* src, DType dtype, size_t n, float* dst) {
  if (dtype_is_quantized(dtype)) {
    dequantize_row(dtype_format(dtype).ggml_type, src, n, dst);
    return;
  }
  if (dtype == DType::F32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  const auto* in = static_cast<const uint16_t*>(src);
  if (dtype == DType::BF16) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(in[i]);
  } else {
    for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(in[i]);
  }
}

void convert(const void* src, DType from, void* dst, DType to, size_t n) {
  if (from == to) {
    std::memcpy(dst, src, dtype_row_bytes(from, n));
    return;
  }
  if (dtype_is_quantized(to)) fail(std::string("convert: cannot convert to block type ") + dtype_name(to));
  constexpr size_t kBlock = 4096;  // a multiple of every block size
  float block[kBlock];
  for (size_t start = 0; start < n; start += kBlock) {
    size_t count = n - start < kBlock ? n - start : kBlock;
    convert_to_f32(static_cast<const char*>(src) + dtype_row_bytes(from, start), from, count, block);
    if (to == DType::F32) {
      std::memcpy(static_cast<float*>(dst) + start, block, count * 4);
    } else {
      auto* out = static_cast<uint16_t*>(dst) + start;
      for (size_t i = 0; i < count; i++) out[i] = to == DType::F16 ? f32_to_f16(block[i]) : f32_to_bf16(block[i]);
    }
  }
}

}  // namespace lw
