// The integer block products (backend/quant_kernels.h) at every instruction-set level this CPU
// can run: each type's dot against a double-precision sum over the reference dequantization
// (format/dequantize.h), the activation quantization bit for bit across levels, and the CPU
// backend's matmul of a few tokens on block weights against the per-row dots.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu_kernels.h"
#include "backend/quant_kernels.h"
#include "format/dequantize.h"
#include "format/dtype.h"

namespace lw {
namespace {

using cpu::Level;

const std::vector<Level> kQuantLevels = {Level::Portable, Level::Avx2, Level::Avx512};

#define LEVEL_OR_SKIP(level)                                                                           \
  if ((level) > cpu::detect_level()) GTEST_SKIP() << "this CPU cannot run the " << cpu::level_name(level) << " kernels"

const std::vector<DType> kBlockTypes = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,  DType::Q5_1,   DType::Q2_K,
                                        DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS};

// Where a block keeps its float16 scales, and its quants (the bytes that are neither scales nor
// the per-sub-block scale bytes).
struct BlockLayout {
  std::vector<int> f16_fields;
  int quants_begin, quants_end;
};

BlockLayout layout(DType t) {
  switch (t) {
    case DType::Q8_0: return {{0}, 2, 34};
    case DType::Q4_0: return {{0}, 2, 18};
    case DType::Q4_1: return {{0, 2}, 4, 20};
    case DType::Q5_0: return {{0}, 2, 22};
    case DType::Q5_1: return {{0, 2}, 4, 24};
    case DType::Q2_K: return {{80, 82}, 16, 80};
    case DType::Q3_K: return {{108}, 0, 96};
    case DType::Q4_K: return {{0, 2}, 16, 144};
    case DType::Q5_K: return {{0, 2}, 16, 176};
    case DType::Q6_K: return {{208}, 0, 192};
    case DType::IQ4_NL: return {{0}, 2, 18};
    case DType::IQ4_XS: return {{0}, 8, 136};
    default: return {{}, 0, 0};
  }
}

// n values of type t: random bytes with finite float16 scales of either sign, 1e-4 .. 0.05.
std::vector<uint8_t> random_row(DType t, int64_t n, uint32_t seed) {
  const DTypeFormat& f = dtype_format(t);
  std::mt19937 gen(seed);
  std::vector<uint8_t> row(dtype_row_bytes(t, static_cast<uint64_t>(n)));
  for (uint8_t& b : row) b = static_cast<uint8_t>(gen());
  std::uniform_real_distribution<float> magnitude(1e-4f, 0.05f);
  for (size_t block = 0; block < row.size() / f.block_bytes; block++)
    for (int offset : layout(t).f16_fields) {
      const float value = (gen() & 1) ? magnitude(gen) : -magnitude(gen);
      const uint16_t bits = f32_to_f16(value);
      std::memcpy(row.data() + block * f.block_bytes + offset, &bits, 2);
    }
  return row;
}

std::vector<float> dequantized(DType t, const std::vector<uint8_t>& row, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  dequantize_row(dtype_format(t).ggml_type, row.data(), static_cast<uint64_t>(n), y.data());
  return y;
}

struct Activations {
  std::vector<int8_t> q;
  std::vector<float> scales;
  std::vector<int32_t> sums;
  cpu::QuantizedActivations view() const { return {q.data(), scales.data(), sums.data()}; }
};

Activations quantize(Level level, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  Activations a;
  a.q.resize(x.size());
  a.scales.resize(x.size() / 32);
  a.sums.resize(x.size() / 16);
  cpu::quant_kernels(level).quantize(x.data(), n, a.q.data(), a.scales.data(), a.sums.data());
  return a;
}

// Normal values of varying scale per block; every seventh block zero.
std::vector<float> random_activations(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0, 1);
  std::uniform_real_distribution<float> spread(-3, 3);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / 32; b++) {
    const float scale = b % 7 == 3 ? 0.0f : std::pow(10.0f, spread(gen));
    for (int i = 0; i < 32; i++) x[static_cast<size_t>(b * 32 + i)] = dist(gen) * scale;
  }
  return x;
}

// ---- dot ----

class QuantDot : public ::testing::TestWithParam<std::tuple<Level, DType>> {};

// The kernel forms, per 32 activations j, an exact integer sum I_j (and M_j for the minimums)
// and the float32 terms dx_j * (d * I_j) and dx_j * (dmin * M_j): each at most 3 roundings,
// relative error <= 3 eps (eps = 2^-24), summed in float32 in some order: at most 2 * (n / 32)
// terms, each partial sum rounding once, error <= (2 n / 32) eps * sum |terms|. The reference
// rounds each weight y_i = (d sc) q - (dmin m) twice (<= 2 eps of |(d sc) q| + |dmin m|). With
// c_i the weight's offset (the dequantization with its quants zeroed, an over-estimate for the
// types without minimums), |(d sc) q_i| <= |y_i| + |c_i|, so every error is below
//   (2 n / 32 + 8) eps * sum_i |x_i| (|y_i| + 2 |c_i|).
TEST_P(QuantDot, MatchesDequantizedReference) {
  const auto [level, type] = GetParam();
  LEVEL_OR_SKIP(level);
  const auto dot = cpu::quant_kernels(level).dot[static_cast<int>(type)];
  ASSERT_NE(dot, nullptr);
  const DTypeFormat& f = dtype_format(type);
  const std::vector<int64_t> lengths = f.block_elements == 32 ? std::vector<int64_t>{32, 96, 288, 4160, 11008}
                                                              : std::vector<int64_t>{256, 768, 2816, 11008};
  uint32_t seed = 1000 * static_cast<uint32_t>(type);
  for (int64_t n : lengths)
    for (int trial = 0; trial < 3; trial++) {
      seed++;
      const std::vector<uint8_t> row = random_row(type, n, seed);
      const std::vector<float> y = dequantized(type, row, n);
      std::vector<uint8_t> zeroed = row;
      for (size_t block = 0; block < row.size() / f.block_bytes; block++)
        for (int i = layout(type).quants_begin; i < layout(type).quants_end; i++) zeroed[block * f.block_bytes + i] = 0;
      const std::vector<float> c = dequantized(type, zeroed, n);
      const Activations a = quantize(level, random_activations(n, seed * 7));
      double expected = 0, magnitude = 0;
      for (int64_t i = 0; i < n; i++) {
        const double xi = static_cast<double>(a.q[i]) * a.scales[i / 32];
        expected += static_cast<double>(y[i]) * xi;
        magnitude += std::fabs(xi) * (std::fabs(y[i]) + 2 * std::fabs(c[i]));
      }
      const double tolerance = (2.0 * static_cast<double>(n) / 32 + 8) * std::ldexp(1.0, -24) * magnitude;
      const float got = dot(row.data(), a.view(), n);
      ASSERT_TRUE(std::isfinite(got));
      EXPECT_NEAR(got, expected, tolerance) << dtype_name(type) << " n=" << n << " trial " << trial;
    }
}

// Unaligned rows and activations (a block type's row inside a bigger buffer at an odd offset).
TEST_P(QuantDot, UnalignedRow) {
  const auto [level, type] = GetParam();
  LEVEL_OR_SKIP(level);
  const auto dot = cpu::quant_kernels(level).dot[static_cast<int>(type)];
  const int64_t n = 512;
  const std::vector<uint8_t> row = random_row(type, n, 77);
  std::vector<uint8_t> shifted(row.size() + 3);
  std::memcpy(shifted.data() + 3, row.data(), row.size());
  const Activations a = quantize(level, random_activations(n, 78));
  std::vector<int8_t> q(a.q.size() + 1);
  std::memcpy(q.data() + 1, a.q.data(), a.q.size());
  const cpu::QuantizedActivations view{q.data() + 1, a.scales.data(), a.sums.data()};
  EXPECT_EQ(dot(shifted.data() + 3, view, n), dot(row.data(), a.view(), n));
}

std::string dot_name(const ::testing::TestParamInfo<std::tuple<Level, DType>>& info) {
  return std::string(cpu::level_name(std::get<0>(info.param))) + "_" + dtype_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Levels, QuantDot, ::testing::Combine(::testing::ValuesIn(kQuantLevels), ::testing::ValuesIn(kBlockTypes)),
                         dot_name);

// ---- quantize ----

class QuantQuantize : public ::testing::TestWithParam<Level> {};

TEST_P(QuantQuantize, FollowsTheDefinition) {
  const Level level = GetParam();
  LEVEL_OR_SKIP(level);
  for (int64_t n : {32, 64, 96, 4096, 11008}) {
    const std::vector<float> x = random_activations(n, static_cast<uint32_t>(n));
    const Activations a = quantize(level, x);
    for (int64_t b = 0; b < n / 32; b++) {
      float amax = 0;
      for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(x[b * 32 + i]));
      const float d = amax / 127.0f;
      ASSERT_EQ(a.scales[b], d) << "block " << b;
      const float inverse = d > 0 ? 1.0f / d : 0.0f;
      for (int half = 0; half < 2; half++) {
        int32_t sum = 0;
        for (int i = 16 * half; i < 16 * half + 16; i++) {
          const int8_t q = a.q[b * 32 + i];
          ASSERT_GE(q, -127);
          ASSERT_LE(q, 127);
          ASSERT_EQ(q, static_cast<int8_t>(std::nearbyint(x[b * 32 + i] * inverse))) << "element " << b * 32 + i;
          if (amax == 0) {
            ASSERT_EQ(q, 0);
          }
          sum += q;
        }
        ASSERT_EQ(a.sums[2 * b + half], sum);
      }
    }
  }
}

TEST_P(QuantQuantize, RoundsHalfwayToEven) {
  const Level level = GetParam();
  LEVEL_OR_SKIP(level);
  // max |x| = 127: d = 1, x * (1/d) = x exactly.
  std::vector<float> x(64, 0.0f);
  const float values[] = {127, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 3.5f, 126.5f, -126.5f, 0.49999997f, 2.5000002f};
  const int8_t expected[] = {127, 0, 2, 2, 0, -2, -2, 4, 126, -126, 0, 3};
  for (size_t i = 0; i < std::size(values); i++) x[i] = values[i];
  const Activations a = quantize(level, x);
  EXPECT_EQ(a.scales[0], 1.0f);
  for (size_t i = 0; i < std::size(values); i++) EXPECT_EQ(a.q[i], expected[i]) << "x = " << values[i];
  // The second block is zero: scale 0, quants 0.
  EXPECT_EQ(a.scales[1], 0.0f);
  for (int i = 32; i < 64; i++) EXPECT_EQ(a.q[i], 0);
  EXPECT_EQ(a.sums[2], 0);
  EXPECT_EQ(a.sums[3], 0);
}

TEST_P(QuantQuantize, BitIdenticalToPortable) {
  const Level level = GetParam();
  LEVEL_OR_SKIP(level);
  for (int64_t n : {32, 160, 4096}) {
    std::vector<float> x = random_activations(n, 5 + static_cast<uint32_t>(n));
    // Halfway cases too: integers + 0.5 under a maximum of 127.
    for (int i = 0; i < 32; i++) x[static_cast<size_t>(i)] = i == 0 ? -127.0f : static_cast<float>(i * 4 - 64) + 0.5f;
    const Activations a = quantize(level, x), reference = quantize(Level::Portable, x);
    ASSERT_EQ(0, std::memcmp(a.q.data(), reference.q.data(), a.q.size()));
    ASSERT_EQ(0, std::memcmp(a.scales.data(), reference.scales.data(), a.scales.size() * sizeof(float)));
    ASSERT_EQ(a.sums, reference.sums);
  }
}

std::string level_only_name(const ::testing::TestParamInfo<Level>& info) { return cpu::level_name(info.param); }

INSTANTIATE_TEST_SUITE_P(Levels, QuantQuantize, ::testing::ValuesIn(kQuantLevels), level_only_name);

// ---- through the backend ----

class QuantMatmul : public ::testing::TestWithParam<std::tuple<Level, DType>> {};

// matmul of 1, 3 and 5 tokens on a block-typed WeightView (with and without a bias) gives, for
// every row and token, exactly the level's dot of that row with the token's quantized values.
TEST_P(QuantMatmul, EqualsPerRowDots) {
  const auto [level, type] = GetParam();
  LEVEL_OR_SKIP(level);
  const int64_t rows = 37, cols = dtype_format(type).block_elements == 32 ? 352 : 768;
  const uint64_t row_bytes = dtype_row_bytes(type, static_cast<uint64_t>(cols));
  const std::vector<uint8_t> weights = random_row(type, rows * cols, 11);
  const WeightView view{weights.data(), type, rows, cols};
  std::vector<float> bias(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; r++) bias[static_cast<size_t>(r)] = 0.25f * static_cast<float>(r % 5) - 0.5f;
  const WeightView bias_view{bias.data(), DType::F32, 1, rows};
  const cpu::QuantKernels& k = cpu::quant_kernels(level);
  for (int threads : {1, 3})
    for (int tokens : {1, 3, 5})
      for (bool with_bias : {false, true}) {
        auto backend = make_cpu_backend(threads, cpu::level_name(level));
        ASSERT_STREQ(backend->kernel_set(), cpu::level_name(level));
        backend->set_compute_dtype(DType::Q8_0);  // the engine's default for block weights
        const std::vector<float> x = random_activations(tokens * cols, static_cast<uint32_t>(tokens * 31 + threads));
        std::vector<float> y(static_cast<size_t>(tokens * rows), -1.0f);
        backend->matmul(y.data(), x.data(), tokens, view, with_bias ? &bias_view : nullptr);
        for (int t = 0; t < tokens; t++) {
          const std::vector<float> token(x.begin() + t * cols, x.begin() + (t + 1) * cols);
          const Activations a = quantize(level, token);
          for (int64_t r = 0; r < rows; r++) {
            const float expected = k.dot[static_cast<int>(type)](weights.data() + r * row_bytes, a.view(), cols) +
                                   (with_bias ? bias[static_cast<size_t>(r)] : 0.0f);
            ASSERT_EQ(y[static_cast<size_t>(t * rows + r)], expected) << "token " << t << " row " << r << " threads " << threads;
          }
        }
      }
}

INSTANTIATE_TEST_SUITE_P(Levels, QuantMatmul, ::testing::Combine(::testing::ValuesIn(kQuantLevels), ::testing::ValuesIn(kBlockTypes)),
                         dot_name);

}  // namespace
}  // namespace lw
