// Quantization to ggml blocks; see quantize.h for the algorithms. Compiled with
// -ffp-contract=off (CMakeLists.txt) so that the simple types round every product and sum as the
// gguf Python package (numpy float32) does.
#include "format/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common/error.h"

namespace lw {
namespace {

using u8 = uint8_t;

// Groups whose largest magnitude is below this are stored as zeros (as ggml's GROUP_MAX_EPS).
constexpr float kGroupEps = 1e-15f;

// Round to nearest, ties to even (ggml's nearest_int, for the small values used here).
int nearest(float v) { return static_cast<int>(std::lrintf(v)); }

[[noreturn]] void too_large(DType type, float scale) {
  fail(std::string(dtype_name(type)) + " quantization",
       "a block scale of " + std::to_string(scale) + " does not fit in float16 (values too large for this type)");
}

// A float16 scale field; throws when the value overflows float16.
uint16_t scale_f16(DType type, float value) {
  const uint16_t bits = f32_to_f16(value);
  if ((bits & 0x7C00) == 0x7C00) too_large(type, value);
  return bits;
}

void store_u16(u8* p, uint16_t v) { std::memcpy(p, &v, 2); }
void store_u32(u8* p, uint32_t v) { std::memcpy(p, &v, 4); }
float f16_value(u8* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return f16_to_f32(bits);
}

// ---- 32-element blocks, as gguf.quants (and ggml's *_ref functions) ----

// Index of the first element of largest magnitude (numpy's argmax of abs).
int first_absmax(const float* x) {
  int at = 0;
  float best = std::fabs(x[0]);
  for (int j = 1; j < 32; j++)
    if (std::fabs(x[j]) > best) best = std::fabs(x[j]), at = j;
  return at;
}

float inverse_or_zero(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

void block_q8_0(const float* x, u8* b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = inverse_or_zero(d);
  store_u16(b, scale_f16(DType::Q8_0, d));
  for (int j = 0; j < 32; j++) b[2 + j] = static_cast<u8>(static_cast<int8_t>(std::round(x[j] * id)));
}

// Signed types: d = (the element of largest magnitude) / -half, q = trunc(x / d + half + 0.5).
template <int kHalf>
void signed_quants(const float* x, float& d, u8* q) {
  d = x[first_absmax(x)] / static_cast<float>(-kHalf);
  const float id = inverse_or_zero(d);
  for (int j = 0; j < 32; j++) {
    const float v = std::trunc(x[j] * id + (static_cast<float>(kHalf) + 0.5f));
    q[j] = static_cast<u8>(std::clamp(v, 0.0f, static_cast<float>(2 * kHalf - 1)));
  }
}

// Offset types: d = (max - min) / levels, q = trunc((x - min) / d + 0.5), min stored.
template <int kLevels>
void offset_quants(const float* x, float& d, float& min, u8* q) {
  float max = x[0];
  min = x[0];
  for (int j = 1; j < 32; j++) max = std::max(max, x[j]), min = std::min(min, x[j]);
  d = (max - min) / static_cast<float>(kLevels);
  const float id = inverse_or_zero(d);
  for (int j = 0; j < 32; j++) {
    const float v = std::trunc((x[j] - min) * id + 0.5f);
    q[j] = static_cast<u8>(std::clamp(v, 0.0f, static_cast<float>(kLevels)));
  }
}

void pack_nibbles(const u8* q, u8* qs) {
  for (int j = 0; j < 16; j++) qs[j] = static_cast<u8>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
}
uint32_t fifth_bits(const u8* q) {
  uint32_t qh = 0;
  for (int j = 0; j < 32; j++) qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  return qh;
}

void block_q4_0(const float* x, u8* b) {
  float d;
  u8 q[32];
  signed_quants<8>(x, d, q);
  store_u16(b, scale_f16(DType::Q4_0, d));
  pack_nibbles(q, b + 2);
}
void block_q5_0(const float* x, u8* b) {
  float d;
  u8 q[32];
  signed_quants<16>(x, d, q);
  store_u16(b, scale_f16(DType::Q5_0, d));
  store_u32(b + 2, fifth_bits(q));
  pack_nibbles(q, b + 6);
}
void block_q4_1(const float* x, u8* b) {
  float d, min;
  u8 q[32];
  offset_quants<15>(x, d, min, q);
  store_u16(b, scale_f16(DType::Q4_1, d));
  store_u16(b + 2, scale_f16(DType::Q4_1, min));
  pack_nibbles(q, b + 4);
}
void block_q5_1(const float* x, u8* b) {
  float d, min;
  u8 q[32];
  offset_quants<31>(x, d, min, q);
  store_u16(b, scale_f16(DType::Q5_1, d));
  store_u16(b + 2, scale_f16(DType::Q5_1, min));
  store_u32(b + 4, fifth_bits(q));
  pack_nibbles(q, b + 8);
}

// ---- K-quants ----

// Scale and minimum for n values quantized to 0..nmax: y = scale * q - the_min. Starts from the
// range, then tries nstep+1 candidate scales (rmin + rdelta*i + nmax over the range), each with
// the weighted least-squares scale and minimum for its quants, keeping the smallest weighted
// squared error. The minimum is never positive (the_min >= 0).
float scale_and_min(int n, int nmax, const float* x, const float* w, u8* L, float& the_min, float rmin,
                    float rdelta, int nstep) {
  float min = x[0], max = x[0], sum_w = 0.0f, sum_x = 0.0f;
  for (int i = 0; i < n; i++) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0.0f) min = 0.0f;
  if (max == min) {
    std::fill(L, L + n, u8{0});
    the_min = -min;
    return 0.0f;
  }
  float iscale = static_cast<float>(nmax) / (max - min), scale = 1.0f / iscale;
  float best_error = 0.0f;
  for (int i = 0; i < n; i++) {
    L[i] = static_cast<u8>(std::clamp(nearest(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * static_cast<float>(L[i]) + min - x[i];
    best_error += w[i] * diff * diff;
  }
  u8 trial[32];
  for (int step = 0; step <= nstep; step++) {
    iscale = (rmin + rdelta * static_cast<float>(step) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int i = 0; i < n; i++) {
      const int l = std::clamp(nearest(iscale * (x[i] - min)), 0, nmax);
      trial[i] = static_cast<u8>(l);
      const float fl = static_cast<float>(l);
      sum_l += w[i] * fl;
      sum_l2 += w[i] * fl * fl;
      sum_xl += w[i] * fl * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det <= 0.0f) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_min > 0.0f) {
      this_min = 0.0f;
      this_scale = sum_xl / sum_l2;
    }
    float error = 0.0f;
    for (int i = 0; i < n; i++) {
      const float diff = this_scale * static_cast<float>(trial[i]) + this_min - x[i];
      error += w[i] * diff * diff;
    }
    if (error < best_error) {
      std::copy(trial, trial + n, L);
      best_error = error;
      scale = this_scale;
      min = this_min;
    }
  }
  the_min = -min;
  return scale;
}

// Q4_K / Q5_K: eight sub-blocks of 32, quants 0..nmax. Fills d, dmin, the 12 packed scale bytes
// and L[256] (the final quants).
void k4_superblock(DType type, const float* x, int nmax, float rmin, int nstep, u8* b, u8* L) {
  float scales[8], mins[8], weights[32];
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; j++) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0.0f;
    for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / 32.0f);
    for (int l = 0; l < 32; l++) weights[l] = av_x + std::fabs(xs[l]);
    scales[j] = scale_and_min(32, nmax, xs, weights, L + 32 * j, mins[j], rmin, 0.1f, nstep);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
  u8* packed = b + 4;
  std::memset(packed, 0, 12);
  int sc[8], mn[8];
  for (int j = 0; j < 8; j++) {
    sc[j] = std::clamp(nearest(inv_scale * scales[j]), 0, 63);
    mn[j] = std::clamp(nearest(inv_min * mins[j]), 0, 63);
    if (j < 4) {
      packed[j] = static_cast<u8>(sc[j]);
      packed[j + 4] = static_cast<u8>(mn[j]);
    } else {
      packed[j + 4] = static_cast<u8>((sc[j] & 0x0F) | ((mn[j] & 0x0F) << 4));
      packed[j - 4] = static_cast<u8>(packed[j - 4] | ((sc[j] >> 4) << 6));
      packed[j] = static_cast<u8>(packed[j] | ((mn[j] >> 4) << 6));
    }
  }
  store_u16(b, scale_f16(type, max_scale / 63.0f));
  store_u16(b + 2, scale_f16(type, max_min / 63.0f));
  const float d = f16_value(b), dmin = f16_value(b + 2);
  if (d == 0.0f && max_scale > 0.0f) {
    // Values so small that the super-block scale is below float16's smallest subnormal: the
    // block is stored as zeros (its minimums alone would only add offsets). A block of
    // constant sub-blocks (max_scale 0) keeps its minimums below.
    std::memset(b, 0, 16);
    std::fill(L, L + 256, u8{0});
    return;
  }
  for (int j = 0; j < 8; j++) {
    const float dl = d * static_cast<float>(sc[j]);
    if (dl == 0.0f) continue;
    const float ml = dmin * static_cast<float>(mn[j]);
    for (int i = 0; i < 32; i++)
      L[32 * j + i] = static_cast<u8>(std::clamp(nearest((x[32 * j + i] + ml) / dl), 0, nmax));
  }
}

void block_q4_k(const float* x, u8* b) {
  u8 L[256];
  k4_superblock(DType::Q4_K, x, 15, -1.0f, 20, b, L);
  u8* qs = b + 16;
  for (int g = 0; g < 4; g++)
    for (int l = 0; l < 32; l++) qs[32 * g + l] = static_cast<u8>(L[64 * g + l] | (L[64 * g + 32 + l] << 4));
}

void block_q5_k(const float* x, u8* b) {
  u8 L[256];
  k4_superblock(DType::Q5_K, x, 31, -0.5f, 15, b, L);
  u8* qh = b + 16;
  u8* qs = b + 48;
  std::memset(qh, 0, 32);
  for (int g = 0; g < 4; g++)
    for (int l = 0; l < 32; l++) {
      const int lo = L[64 * g + l], hi = L[64 * g + 32 + l];
      qh[l] = static_cast<u8>(qh[l] | ((lo >> 4) << (2 * g)) | ((hi >> 4) << (2 * g + 1)));
      qs[32 * g + l] = static_cast<u8>((lo & 0x0F) | ((hi & 0x0F) << 4));
    }
}

// Signed quants -nmax..nmax-1 (stored + nmax) for 16 values weighted by x^2: the absmax scale and
// 18 neighbours (nmax ± 0.1 i), each refit by least squares, the best kept.
float signed_scale_search(const float* x, int nmax, int8_t* L) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < 16; i++)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  if (amax < kGroupEps) {
    std::fill(L, L + 16, static_cast<int8_t>(nmax));
    return 0.0f;
  }
  auto fit = [&](float iscale, int8_t* out, float& sumlx, float& suml2) {
    sumlx = suml2 = 0.0f;
    for (int i = 0; i < 16; i++) {
      const int l = std::clamp(nearest(iscale * x[i]), -nmax, nmax - 1);
      if (out) out[i] = static_cast<int8_t>(l + nmax);
      const float w = x[i] * x[i], fl = static_cast<float>(l);
      sumlx += w * x[i] * fl;
      suml2 += w * fl * fl;
    }
  };
  float sumlx, suml2;
  fit(-static_cast<float>(nmax) / max, L, sumlx, suml2);
  float scale = suml2 > 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int step = -9; step <= 9; step++) {
    if (step == 0) continue;
    const float iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / max;
    fit(iscale, nullptr, sumlx, suml2);
    if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
      fit(iscale, L, sumlx, suml2);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

void block_q6_k(const float* x, u8* b) {
  int8_t L[256];
  float scales[16];
  float max_scale = 0.0f, max_abs = 0.0f;
  for (int s = 0; s < 16; s++) {
    scales[s] = signed_scale_search(x + 16 * s, 32, L + 16 * s);
    if (std::fabs(scales[s]) > max_abs) max_abs = std::fabs(scales[s]), max_scale = scales[s];
  }
  std::memset(b, 0, 210);
  if (max_abs < kGroupEps) return;  // all zero: d = 0
  u8* ql = b;
  u8* qh = b + 128;
  auto* sc = reinterpret_cast<int8_t*>(b + 192);
  const float iscale = -128.0f / max_scale;
  store_u16(b + 208, scale_f16(DType::Q6_K, 1.0f / iscale));
  const float d = f16_value(b + 208);
  for (int s = 0; s < 16; s++) {
    sc[s] = static_cast<int8_t>(std::clamp(nearest(iscale * scales[s]), -128, 127));
    const float dl = d * static_cast<float>(sc[s]);
    if (dl == 0.0f) continue;
    for (int i = 0; i < 16; i++)
      L[16 * s + i] = static_cast<int8_t>(std::clamp(nearest(x[16 * s + i] / dl), -32, 31) + 32);
  }
  for (int g = 0; g < 2; g++)
    for (int l = 0; l < 32; l++) {
      const int q0 = L[128 * g + l], q1 = L[128 * g + l + 32], q2 = L[128 * g + l + 64], q3 = L[128 * g + l + 96];
      ql[64 * g + l] = static_cast<u8>((q0 & 0x0F) | ((q2 & 0x0F) << 4));
      ql[64 * g + l + 32] = static_cast<u8>((q1 & 0x0F) | ((q3 & 0x0F) << 4));
      qh[32 * g + l] = static_cast<u8>((q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6));
    }
}

// ---- non-linear 4-bit types ----

constexpr int8_t kLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// The level nearest to v (ties to the lower one).
u8 nearest_level(float v) {
  if (v <= kLevels[0]) return 0;
  if (v >= kLevels[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (v < kLevels[mid]) hi = mid;
    else lo = mid;
  }
  return static_cast<u8>(v - static_cast<float>(kLevels[hi - 1]) < static_cast<float>(kLevels[hi]) - v ? hi - 1 : hi);
}

// The scale of one 32-element group on the level table, weighted by x^2: the absmax scale and 14
// neighbours, each refit by least squares; the best kept. 0 for an all-zero group.
float iq4_group_scale(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; j++)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
  if (amax < kGroupEps) return 0.0f;
  constexpr int kTries = 7;
  auto fit = [&](float id, float& sumqx, float& sumq2) {
    sumqx = sumq2 = 0.0f;
    for (int j = 0; j < 32; j++) {
      const float q = kLevels[nearest_level(id * x[j])], w = x[j] * x[j];
      sumqx += w * q * x[j];
      sumq2 += w * q * q;
    }
  };
  float sumqx, sumq2;
  fit(-static_cast<float>(kLevels[0]) / max, sumqx, sumq2);  // positive scale: max -> level 127
  float d = sumqx / sumq2, best = d * sumqx;
  for (int step = -kTries; step <= kTries; step++) {
    const float id = (static_cast<float>(step) + static_cast<float>(kLevels[0])) / max;
    fit(id, sumqx, sumq2);
    if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}

void iq4_pack(const float* x, float dl, u8* qs) {
  const float idl = dl != 0.0f ? 1.0f / dl : 0.0f;
  u8 L[32];
  for (int j = 0; j < 32; j++) L[j] = nearest_level(idl * x[j]);
  for (int j = 0; j < 16; j++) qs[j] = static_cast<u8>(L[j] | (L[j + 16] << 4));
}

void block_iq4_nl(const float* x, u8* b) {
  const float d = iq4_group_scale(x);
  store_u16(b, scale_f16(DType::IQ4_NL, d));
  iq4_pack(x, d, b + 2);
}

void block_iq4_xs(const float* x, u8* b) {
  float scales[8];
  float max_scale = 0.0f, amax_scale = 0.0f;
  for (int s = 0; s < 8; s++) {
    scales[s] = iq4_group_scale(x + 32 * s);
    if (std::fabs(scales[s]) > amax_scale) amax_scale = std::fabs(scales[s]), max_scale = scales[s];
  }
  const float d = -max_scale / 32.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b, scale_f16(DType::IQ4_XS, d));
  uint16_t scales_h = 0;
  u8* scales_l = b + 4;
  std::memset(scales_l, 0, 4);
  for (int s = 0; s < 8; s++) {
    const int l = std::clamp(nearest(id * scales[s]), -32, 31);
    iq4_pack(x + 32 * s, d * static_cast<float>(l), b + 8 + 16 * s);
    const int stored = l + 32;
    scales_l[s / 2] = static_cast<u8>(scales_l[s / 2] | ((stored & 0x0F) << (4 * (s % 2))));
    scales_h = static_cast<uint16_t>(scales_h | ((stored >> 4) << (2 * s)));
  }
  store_u16(b + 2, scales_h);
}

using BlockFn = void (*)(const float*, u8*);

BlockFn block_function(DType type) {
  switch (type) {
    case DType::Q8_0: return block_q8_0;
    case DType::Q4_0: return block_q4_0;
    case DType::Q4_1: return block_q4_1;
    case DType::Q5_0: return block_q5_0;
    case DType::Q5_1: return block_q5_1;
    case DType::Q4_K: return block_q4_k;
    case DType::Q5_K: return block_q5_k;
    case DType::Q6_K: return block_q6_k;
    case DType::IQ4_NL: return block_iq4_nl;
    case DType::IQ4_XS: return block_iq4_xs;
    default: return nullptr;
  }
}

}  // namespace

bool dtype_quantizable(DType type) { return block_function(type) != nullptr; }

namespace {

// `row` names the row in messages (-1: a single row, unnamed).
void quantize_one(DType type, const float* x, uint64_t n, void* out, int64_t row) {
  if (!dtype_is_quantized(type)) {
    convert(x, DType::F32, out, type, n);
    return;
  }
  const std::string what = std::string(dtype_name(type)) + " quantization";
  const std::string where = row < 0 ? "the row" : "row " + std::to_string(row);
  const BlockFn block = block_function(type);
  if (!block) fail(what, "is not supported (only read, never written)");
  const DTypeFormat& format = dtype_format(type);
  if (n % format.block_elements != 0)
    fail(what, "a row of " + std::to_string(n) + " elements is not a multiple of the block size " +
                   std::to_string(format.block_elements));
  for (uint64_t i = 0; i < n; i++)
    if (!std::isfinite(x[i]))
      fail(what, "element " + std::to_string(i) + " of " + where + " is not finite (" + std::to_string(x[i]) + ")");
  auto* dst = static_cast<u8*>(out);
  const uint64_t blocks = n / format.block_elements;
  alignas(16) u8 local[256];  // the largest block (Q6_K) is 210 bytes
  try {
    for (uint64_t i = 0; i < blocks; i++) {
      block(x + i * format.block_elements, local);
      std::memcpy(dst + i * format.block_bytes, local, format.block_bytes);
    }
  } catch (const Error& problem) {
    if (row < 0) throw;
    std::string message = problem.what();
    if (message.starts_with(what + ": ")) message.erase(0, what.size() + 2);
    fail(what, where + ": " + message);
  }
}

}  // namespace

void quantize_row(DType type, const float* x, uint64_t n, void* out) { quantize_one(type, x, n, out, -1); }

void quantize_rows(DType type, const float* x, uint64_t rows, uint64_t n, void* out, uint64_t first_row) {
  const uint64_t row_bytes = dtype_row_bytes(type, n);
  for (uint64_t r = 0; r < rows; r++)
    quantize_one(type, x + r * n, n, static_cast<u8*>(out) + r * row_bytes, static_cast<int64_t>(first_row + r));
}

}  // namespace lw
