// Dequantization of ggml blocks, following the arithmetic of the gguf Python package
// (gguf/quants.py, v0.19) step for step so the float32 results are bit-identical:
//
//   - every float16 field (d, dmin, m) is widened to float32 before any arithmetic;
//   - integer quants become float32 exactly (they are small integers);
//   - where numpy forms a per-sub-block scale first (the K-quants: dl = d * sc, ml = dmin * m),
//     so do we, and only then multiply by the quant: y = dl * q - ml, two roundings, never
//     d * (sc * q) or a fused multiply-add;
//   - the "_1" types add their minimum last: y = d * q + m;
//   - the IQ4 types look each nibble up in a table of int8 levels; the level is the "quant".
//
// This file is compiled with -ffp-contract=off (CMakeLists.txt): a fused multiply-add
// would round once instead of twice and change the last bit. Each block kind is a function with
// fixed-size loops over its elements so the compiler can vectorise them; the dispatch on the type
// happens once per call, not per block or element.
#include "format/dequantize.h"

#include <cstddef>
#include <cstring>
#include <string>

#include "common/error.h"
#include "format/dtype.h"

namespace lw {
namespace {

// ggml type numbers (as in gguf.h's table).
enum : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kIQ4_NL = 20,
  kIQ4_XS = 23,
  kBF16 = 30,
};

using u8 = uint8_t;

float load_f16(const u8* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return f16_to_f32(bits);
}

uint32_t load_u32(const u8* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

float to_float(int v) { return static_cast<float>(v); }

// ---- 32-element blocks ----

// Q8_0 (34 bytes): f16 d | int8 q[32].  y = q * d
void block_q8_0(const u8* b, float* y) {
  const float d = load_f16(b);
  const u8* q = b + 2;
  for (int j = 0; j < 32; j++) y[j] = to_float(static_cast<int8_t>(q[j])) * d;
}

// Q4_0 (18 bytes): f16 d | u8 qs[16]; element j is the low nibble of qs[j], element j+16 the
// high nibble.  y = d * (nibble - 8)
void block_q4_0(const u8* b, float* y) {
  const float d = load_f16(b);
  const u8* qs = b + 2;
  for (int j = 0; j < 16; j++) {
    y[j] = d * to_float((qs[j] & 0x0F) - 8);
    y[j + 16] = d * to_float((qs[j] >> 4) - 8);
  }
}

// Q4_1 (20 bytes): f16 d | f16 m | u8 qs[16].  y = d * nibble + m
void block_q4_1(const u8* b, float* y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  const u8* qs = b + 4;
  for (int j = 0; j < 16; j++) {
    y[j] = d * to_float(qs[j] & 0x0F) + m;
    y[j + 16] = d * to_float(qs[j] >> 4) + m;
  }
}

// Q5_0 (22 bytes): f16 d | u32 qh (bit j = fifth bit of element j) | u8 qs[16].
// y = d * (q - 16)
void block_q5_0(const u8* b, float* y) {
  const float d = load_f16(b);
  const uint32_t qh = load_u32(b + 2);
  const u8* qs = b + 6;
  for (int j = 0; j < 16; j++) {
    const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * to_float(lo - 16);
    y[j + 16] = d * to_float(hi - 16);
  }
}

// Q5_1 (24 bytes): f16 d | f16 m | u32 qh | u8 qs[16].  y = d * q + m
void block_q5_1(const u8* b, float* y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  const uint32_t qh = load_u32(b + 4);
  const u8* qs = b + 8;
  for (int j = 0; j < 16; j++) {
    const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * to_float(lo) + m;
    y[j + 16] = d * to_float(hi) + m;
  }
}

// ---- 256-element superblocks (K-quants) ----
// Element e of a superblock belongs to sub-block e / 16 (Q2_K, Q3_K, Q6_K) or e / 32 (Q4_K,
// Q5_K), whose scale is formed once as a float32 product.

// Q2_K (84 bytes): u8 scales[16] (low nibble: scale, high nibble: min) | u8 qs[64] | f16 d |
// f16 dmin. Element g*128 + s*32 + j (g < 2, s < 4, j < 32) is bits 2s..2s+1 of qs[g*32 + j].
// y = (d * sc) * q - (dmin * m)
void block_q2_k(const u8* b, float* y) {
  const u8* scales = b;
  const u8* qs = b + 16;
  const float d = load_f16(b + 80);
  const float dmin = load_f16(b + 82);
  float dl[16], ml[16];
  for (int i = 0; i < 16; i++) {
    dl[i] = d * to_float(scales[i] & 0x0F);
    ml[i] = dmin * to_float(scales[i] >> 4);
  }
  for (int g = 0; g < 2; g++)
    for (int s = 0; s < 4; s++)
      for (int h = 0; h < 2; h++) {
        const int sub = g * 8 + s * 2 + h;
        const float a = dl[sub], c = ml[sub];
        const u8* q = qs + g * 32 + h * 16;
        float* out = y + g * 128 + s * 32 + h * 16;
        for (int j = 0; j < 16; j++) out[j] = a * to_float((q[j] >> (2 * s)) & 3) - c;
      }
}

// Q3_K (110 bytes): u8 hmask[32] | u8 qs[64] | u8 scales[12] (16 six-bit scales, offset 32) |
// f16 d. Element g*128 + s*32 + j: low two bits are bits 2s..2s+1 of qs[g*32 + j]; bit g*4+s of
// hmask[j] CLEAR subtracts 4.  y = (d * (scale - 32)) * q
void block_q3_k(const u8* b, float* y) {
  const u8* hmask = b;
  const u8* qs = b + 32;
  const u8* sc = b + 96;
  const float d = load_f16(b + 108);
  float dl[16];
  for (int i = 0; i < 16; i++) {
    const int low = i < 8 ? (sc[i] & 0x0F) : (sc[i - 8] >> 4);
    const int high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
    dl[i] = d * to_float((low | (high << 4)) - 32);
  }
  for (int g = 0; g < 2; g++)
    for (int s = 0; s < 4; s++) {
      const int bit = g * 4 + s;
      for (int h = 0; h < 2; h++) {
        const float a = dl[g * 8 + s * 2 + h];
        const u8* q = qs + g * 32 + h * 16;
        const u8* hm = hmask + h * 16;
        float* out = y + g * 128 + s * 32 + h * 16;
        for (int j = 0; j < 16; j++) {
          const int low = (q[j] >> (2 * s)) & 3;
          const int minus = (((hm[j] >> bit) & 1) ^ 1) << 2;
          out[j] = a * to_float(low - minus);
        }
      }
    }
}

// The eight six-bit scales and mins of Q4_K / Q5_K, packed in 12 bytes.
void unpack_k4_scales(const u8* s, int* sc, int* mn) {
  for (int i = 0; i < 4; i++) {
    sc[i] = s[i] & 0x3F;
    mn[i] = s[i + 4] & 0x3F;
    sc[i + 4] = (s[i + 8] & 0x0F) | ((s[i] >> 2) & 0x30);
    mn[i + 4] = (s[i + 8] >> 4) | ((s[i + 4] >> 2) & 0x30);
  }
}

// Q4_K (144 bytes): f16 d | f16 dmin | u8 scales[12] | u8 qs[128]. Sub-block 2g+h (32 elements)
// is the low (h = 0) or high (h = 1) nibbles of qs[g*32 .. g*32+32).
// y = (d * sc) * q - (dmin * m)
void block_q4_k(const u8* b, float* y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  int sc[8], mn[8];
  unpack_k4_scales(b + 4, sc, mn);
  const u8* qs = b + 16;
  for (int g = 0; g < 4; g++)
    for (int h = 0; h < 2; h++) {
      const int sub = 2 * g + h;
      const float a = d * to_float(sc[sub]);
      const float c = dmin * to_float(mn[sub]);
      const u8* q = qs + g * 32;
      float* out = y + sub * 32;
      for (int j = 0; j < 32; j++) out[j] = a * to_float((q[j] >> (4 * h)) & 0x0F) - c;
    }
}

// Q5_K (176 bytes): f16 d | f16 dmin | u8 scales[12] | u8 qh[32] | u8 qs[128]. As Q4_K, with
// bit `sub` of qh[j] as the fifth bit of element j of sub-block `sub`.
void block_q5_k(const u8* b, float* y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  int sc[8], mn[8];
  unpack_k4_scales(b + 4, sc, mn);
  const u8* qh = b + 16;
  const u8* qs = b + 48;
  for (int g = 0; g < 4; g++)
    for (int h = 0; h < 2; h++) {
      const int sub = 2 * g + h;
      const float a = d * to_float(sc[sub]);
      const float c = dmin * to_float(mn[sub]);
      const u8* q = qs + g * 32;
      float* out = y + sub * 32;
      for (int j = 0; j < 32; j++) {
        const int v = ((q[j] >> (4 * h)) & 0x0F) | (((qh[j] >> sub) & 1) << 4);
        out[j] = a * to_float(v) - c;
      }
    }
}

// Q6_K (210 bytes): u8 ql[128] | u8 qh[64] | int8 scales[16] | f16 d. In half g (128 elements),
// element 64*n + 32*k + j (n, k < 2, j < 32) has its low four bits in nibble n of
// ql[g*64 + 32*k + j] and its high two bits at bits 2*(2n+k) of qh[g*32 + j].
// y = (d * scale) * (q - 32)
void block_q6_k(const u8* b, float* y) {
  const u8* ql = b;
  const u8* qh = b + 128;
  const u8* scales = b + 192;
  const float d = load_f16(b + 208);
  float dl[16];
  for (int i = 0; i < 16; i++) dl[i] = d * to_float(static_cast<int8_t>(scales[i]));
  for (int g = 0; g < 2; g++)
    for (int n = 0; n < 2; n++)
      for (int k = 0; k < 2; k++) {
        const int shift = 2 * (2 * n + k);
        for (int h = 0; h < 2; h++) {
          const int first = g * 128 + 64 * n + 32 * k + 16 * h;  // first element of the run
          const float a = dl[first / 16];
          const u8* l = ql + g * 64 + 32 * k + 16 * h;
          const u8* hi = qh + g * 32 + 16 * h;
          float* out = y + first;
          for (int j = 0; j < 16; j++) {
            const int v = ((l[j] >> (4 * n)) & 0x0F) | (((hi[j] >> shift) & 3) << 4);
            out[j] = a * to_float(v - 32);
          }
        }
      }
}

// ---- non-linear 4-bit types ----
// A nibble is not the value itself but an index into 16 int8 levels spaced closer near zero
// (gguf.quants.IQ4_NL.kvalues); the level becomes float32 exactly, then meets the scale.
constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

// IQ4_NL (18 bytes): f16 d | u8 qs[16]; element j is the low nibble of qs[j], element j+16 the
// high nibble (as Q4_0).  y = d * level
void block_iq4_nl(const u8* b, float* y) {
  const float d = load_f16(b);
  const u8* qs = b + 2;
  for (int j = 0; j < 16; j++) {
    y[j] = d * to_float(kIq4Levels[qs[j] & 0x0F]);
    y[j + 16] = d * to_float(kIq4Levels[qs[j] >> 4]);
  }
}

// IQ4_XS (136 bytes): f16 d | u16 scales_h | u8 scales_l[4] | u8 qs[128]. Sub-block s (32
// elements) has a six-bit scale stored with offset 32: its low four bits are nibble s % 2 of
// scales_l[s / 2], its high two bits are bits 2s..2s+1 of scales_h. Its elements are laid out
// as one IQ4_NL block in qs[16s .. 16s+16).  y = (d * (scale - 32)) * level
void block_iq4_xs(const u8* b, float* y) {
  const float d = load_f16(b);
  const int scales_h = b[2] | (b[3] << 8);  // little-endian, as numpy's view(uint16)
  const u8* scales_l = b + 4;
  const u8* qs = b + 8;
  for (int s = 0; s < 8; s++) {
    const int low = (scales_l[s / 2] >> (4 * (s % 2))) & 0x0F;
    const int high = (scales_h >> (2 * s)) & 3;
    const float dl = d * to_float((low | (high << 4)) - 32);  // formed first, as numpy's dl
    const u8* q = qs + 16 * s;
    float* out = y + 32 * s;
    for (int j = 0; j < 16; j++) {
      out[j] = dl * to_float(kIq4Levels[q[j] & 0x0F]);
      out[j + 16] = dl * to_float(kIq4Levels[q[j] >> 4]);
    }
  }
}

template <size_t kTypeSize, size_t kBlockSize, void (*kBlock)(const u8*, float*)>
void blocks(const void* src, uint64_t n_blocks, float* dst) {
  const auto* in = static_cast<const u8*>(src);
  for (uint64_t i = 0; i < n_blocks; i++) kBlock(in + i * kTypeSize, dst + i * kBlockSize);
}

// F16 / BF16 through convert_to_f32, which reads uint16_t: an odd address goes through an
// aligned local copy.
void halves(const void* src, DType dtype, uint64_t n, float* dst) {
  if ((reinterpret_cast<uintptr_t>(src) & 1) == 0) {
    convert_to_f32(src, dtype, n, dst);
    return;
  }
  constexpr uint64_t kChunk = 2048;
  uint16_t local[kChunk];
  const auto* in = static_cast<const u8*>(src);
  for (uint64_t start = 0; start < n; start += kChunk) {
    const uint64_t count = n - start < kChunk ? n - start : kChunk;
    std::memcpy(local, in + start * 2, count * 2);
    convert_to_f32(local, dtype, count, dst + start);
  }
}

const DTypeFormat& dequantizable_format(uint32_t type, uint64_t elements, const char* what) {
  const std::optional<DType> dtype = dtype_from_ggml(type);
  if (!dtype)
    fail(std::string(what) + ": cannot dequantize ggml type " + std::to_string(type) + " (supported: " + dtype_names() + ")");
  const DTypeFormat& format = dtype_format(*dtype);
  if (elements % format.block_elements != 0)
    fail(std::string(what) + ": " + std::to_string(elements) + " elements of type " + format.name +
         " are not a multiple of its block size " + std::to_string(format.block_elements));
  return format;
}

}  // namespace

bool ggml_type_dequantizable(uint32_t ggml_type) { return dtype_from_ggml(ggml_type).has_value(); }

void dequantize_row(uint32_t ggml_type, const void* src, uint64_t elements, float* dst) {
  const DTypeFormat& info = dequantizable_format(ggml_type, elements, "dequantize");
  const uint64_t n_blocks = elements / info.block_elements;
  switch (ggml_type) {
    case kF32: std::memcpy(dst, src, elements * 4); break;
    case kF16: halves(src, DType::F16, elements, dst); break;
    case kBF16: halves(src, DType::BF16, elements, dst); break;
    case kQ8_0: blocks<34, 32, block_q8_0>(src, n_blocks, dst); break;
    case kQ4_0: blocks<18, 32, block_q4_0>(src, n_blocks, dst); break;
    case kQ4_1: blocks<20, 32, block_q4_1>(src, n_blocks, dst); break;
    case kQ5_0: blocks<22, 32, block_q5_0>(src, n_blocks, dst); break;
    case kQ5_1: blocks<24, 32, block_q5_1>(src, n_blocks, dst); break;
    case kQ2_K: blocks<84, 256, block_q2_k>(src, n_blocks, dst); break;
    case kQ3_K: blocks<110, 256, block_q3_k>(src, n_blocks, dst); break;
    case kQ4_K: blocks<144, 256, block_q4_k>(src, n_blocks, dst); break;
    case kQ5_K: blocks<176, 256, block_q5_k>(src, n_blocks, dst); break;
    case kQ6_K: blocks<210, 256, block_q6_k>(src, n_blocks, dst); break;
    case kIQ4_NL: blocks<18, 32, block_iq4_nl>(src, n_blocks, dst); break;
    case kIQ4_XS: blocks<136, 256, block_iq4_xs>(src, n_blocks, dst); break;
    default: break;  // refused by dequantizable_info
  }
}

void dequantize_in_place(uint32_t ggml_type, float* buffer, uint64_t elements) {
  const DTypeFormat& info = dequantizable_format(ggml_type, elements, "dequantize_in_place");
  if (ggml_type == kF32) return;
  const uint64_t n_blocks = elements / info.block_elements;
  const uint64_t raw_bytes = n_blocks * info.block_bytes;
  auto* base = reinterpret_cast<u8*>(buffer);
  const u8* raw = base + (elements * 4 - raw_bytes);
  // Chunk c of k blocks is read from raw + c*k*type_size and written to
  // [c*k*block_size*4, (c+1)*k*block_size*4). With t = type_size <= 4*block_size = s, the write
  // ends at (c+1)*k*s <= elements*4 - raw_bytes + (c+1)*k*t (as (c+1)*k <= n_blocks), where the
  // next chunk's raw bytes begin: a chunk's floats never reach raw data not yet copied out.
  alignas(64) u8 local[16384];
  const uint64_t per_chunk = sizeof(local) / info.block_bytes;  // >= 1: every block < 16 KiB
  for (uint64_t first = 0; first < n_blocks; first += per_chunk) {
    const uint64_t count = n_blocks - first < per_chunk ? n_blocks - first : per_chunk;
    std::memcpy(local, raw + first * info.block_bytes, count * info.block_bytes);
    dequantize_row(ggml_type, local, count * info.block_elements, buffer + first * info.block_elements);
  }
}

}  // namespace lw
