// format/quantize: bit-exact agreement with the gguf Python package where it quantizes (goldens
// from scripts/make_quant_goldens.py), round trips through the reference dequantization with
// measured error bounds for every type, and the edge cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "format/dequantize.h"
#include "format/dtype.h"
#include "format/quantize.h"
#include "helpers.h"

namespace lw {
namespace {

const DType kAll[] = {DType::Q8_0, DType::Q4_0,  DType::Q4_1, DType::Q5_0,   DType::Q5_1,
                      DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS};

std::vector<float> round_trip(DType type, const std::vector<float>& x) {
  std::vector<uint8_t> blocks(dtype_row_bytes(type, x.size()));
  quantize_row(type, x.data(), x.size(), blocks.data());
  std::vector<float> y(x.size());
  dequantize_row(dtype_format(type).ggml_type, blocks.data(), x.size(), y.data());
  return y;
}

std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  return x;
}

// sqrt(mean((y - x)^2)) / sqrt(mean(x^2))
double relative_rms(const std::vector<float>& x, const std::vector<float>& y) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); i++) {
    err += (static_cast<double>(y[i]) - x[i]) * (static_cast<double>(y[i]) - x[i]);
    ref += static_cast<double>(x[i]) * x[i];
  }
  return std::sqrt(err / ref);
}

double gaussian_error(DType type) {
  const auto x = gaussian(64 * 256, 7);
  return relative_rms(x, round_trip(type, x));
}

TEST(Quantize, MatchesGgufPythonBitForBit) {
  const auto index = test::load_json(test::fixture("quantize/goldens.json"));
  const int rows = index["rows"], cols = index["cols"];
  const std::string input = test::read_file(test::fixture("quantize/") + index["input"].get<std::string>());
  ASSERT_EQ(input.size(), static_cast<size_t>(rows) * static_cast<size_t>(cols) * 4);
  std::vector<float> x(static_cast<size_t>(rows) * static_cast<size_t>(cols));
  std::memcpy(x.data(), input.data(), input.size());
  int checked = 0;
  for (const auto& [name, entry] : index["types"].items()) {
    SCOPED_TRACE(name);
    const DType type = *dtype_from_name(name);
    const std::string golden = test::read_file(test::fixture("quantize/") + entry["file"].get<std::string>());
    const uint64_t row_bytes = dtype_row_bytes(type, static_cast<uint64_t>(cols));
    ASSERT_EQ(golden.size(), row_bytes * static_cast<uint64_t>(rows));
    std::vector<uint8_t> ours(golden.size());
    quantize_rows(type, x.data(), static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ours.data());
    for (int r = 0; r < rows; r++)
      EXPECT_EQ(0, std::memcmp(ours.data() + r * row_bytes, golden.data() + r * row_bytes, row_bytes)) << "row " << r;
    checked++;
  }
  EXPECT_EQ(checked, 5);  // Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: what gguf 0.19 quantizes
}

// Relative RMS error on Gaussian data (64 rows of 256), measured with this code and bounded
// with a little headroom; the bounds are what each type's bits allow, so a scale or layout bug
// (a permuted nibble, a wrong sub-block scale) fails them by far.
TEST(Quantize, GaussianErrorBounds) {
  struct Bound {
    DType type;
    double max;
  };
  // Measured (libstdc++'s mt19937 + normal_distribution, seed 7): Q8_0 0.0053, Q4_0 0.0856,
  // Q4_1 0.0780, Q5_0 0.0423, Q5_1 0.0377, Q4_K 0.0711, Q5_K 0.0360, Q6_K 0.0177, IQ4_NL 0.0748,
  // IQ4_XS 0.0754 (printed below). Bounds: about 5% above.
  const Bound bounds[] = {{DType::Q8_0, 0.0056}, {DType::Q4_0, 0.090},  {DType::Q4_1, 0.082},   {DType::Q5_0, 0.0445},
                          {DType::Q5_1, 0.040},  {DType::Q4_K, 0.075},  {DType::Q5_K, 0.038},   {DType::Q6_K, 0.0186},
                          {DType::IQ4_NL, 0.079}, {DType::IQ4_XS, 0.079}};
  for (const auto& bound : bounds) {
    const double error = gaussian_error(bound.type);
    std::printf("  %-6s relative RMS error %.4f (bound %.3f)\n", dtype_name(bound.type), error, bound.max);
    EXPECT_LT(error, bound.max) << dtype_name(bound.type);
  }
}

TEST(Quantize, MoreBitsLessError) {
  EXPECT_LT(gaussian_error(DType::Q6_K), gaussian_error(DType::Q5_K));
  EXPECT_LT(gaussian_error(DType::Q5_K), gaussian_error(DType::Q4_K));
  EXPECT_LT(gaussian_error(DType::Q4_K), gaussian_error(DType::Q4_0));
  EXPECT_LT(gaussian_error(DType::IQ4_NL), gaussian_error(DType::Q4_0));
  EXPECT_LT(gaussian_error(DType::IQ4_XS), gaussian_error(DType::Q4_0));
  EXPECT_LT(gaussian_error(DType::Q8_0), gaussian_error(DType::Q6_K));
  EXPECT_LT(gaussian_error(DType::Q5_0), gaussian_error(DType::Q4_0));
}

// Every element lands near its own value: a ramp whose sub-blocks have very different ranges
// (and signs) would show any misplaced element, nibble or scale as an error of the order of
// the ramp itself. Each element's error stays within the quantization step of its sub-block.
TEST(Quantize, ElementsKeepTheirPlace) {
  std::vector<float> x(512);
  for (size_t i = 0; i < x.size(); i++) {
    const float group = static_cast<float>(i / 16 % 7 + 1);  // 16-element groups of different sizes
    x[i] = group * (static_cast<float>(i % 16) - 7.3f) * ((i / 32) % 2 ? -0.01f : 0.013f);
  }
  for (DType type : kAll) {
    SCOPED_TRACE(dtype_name(type));
    const auto y = round_trip(type, x);
    const size_t group = type == DType::Q6_K ? 16 : 32;  // the smallest run sharing a scale
    for (size_t start = 0; start < x.size(); start += group) {
      float amax = 0;
      for (size_t i = start; i < start + group; i++) amax = std::max(amax, std::fabs(x[i]));
      // Worst step of the type relative to its group's magnitude (IQ4's widest level gap is
      // 24/127 of the range), plus the super-block scale's own 6-bit rounding for K / XS.
      const float step = amax * (type == DType::Q8_0 ? 0.01f : 0.25f);
      for (size_t i = start; i < start + group; i++) EXPECT_NEAR(y[i], x[i], step) << "element " << i;
    }
  }
}

TEST(Quantize, AllZeroBlocksStayZero) {
  const std::vector<float> x(512, 0.0f);
  for (DType type : kAll) {
    const auto y = round_trip(type, x);
    for (size_t i = 0; i < x.size(); i++) ASSERT_EQ(y[i], 0.0f) << dtype_name(type) << " element " << i;
  }
}

TEST(Quantize, ConstantBlocks) {
  for (float value : {0.75f, -2.5f}) {
    const std::vector<float> x(512, value);
    for (DType type : kAll) {
      const auto y = round_trip(type, x);
      for (size_t i = 0; i < x.size(); i++)
        ASSERT_NEAR(y[i], value, std::fabs(value) * 0.02f) << dtype_name(type) << " element " << i;
    }
  }
}

TEST(Quantize, HugeAndTinyValues) {
  // Large or small, with block scales inside float16's range: the type's relative precision.
  for (float scale : {1000.0f, 1e-3f}) {
    const auto x = gaussian(512, 3, scale);
    for (DType type : kAll) {
      const auto y = round_trip(type, x);
      EXPECT_LT(relative_rms(x, y), 0.11) << dtype_name(type) << " at scale " << scale;
    }
  }
  // Tiny values meet float16's subnormal scales. The 32-element types keep a coarse copy; the
  // K and XS types, whose super-block scale is a further factor 32-128 smaller, store blocks
  // whose scale underflows as zeros (error 1), never as something worse than zeros.
  const auto tiny = gaussian(512, 3, 1e-5f);
  for (DType type : kAll) {
    const auto y = round_trip(type, tiny);
    for (float v : y) ASSERT_TRUE(std::isfinite(v)) << dtype_name(type);
    const bool super_block = dtype_format(type).block_elements == 256;
    EXPECT_LE(relative_rms(tiny, y), super_block ? 1.0 : 0.5) << dtype_name(type);
  }
  // A block scale beyond float16's range is refused, never written as infinity.
  std::vector<float> x = gaussian(256, 4);
  x[5] = 1e9f;
  std::vector<uint8_t> out(1024);
  for (DType type : kAll) EXPECT_THROW(quantize_row(type, x.data(), x.size(), out.data()), Error) << dtype_name(type);
  std::vector<float> rows(512, 0.5f);
  rows[256 + 9] = 1e9f;
  try {
    quantize_rows(DType::Q8_0, rows.data(), 2, 256, out.data(), 40);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q8_0 quantization: row 41: a block scale of"), std::string::npos) << e.what();
  }
}

TEST(Quantize, RefusesWhatItCannotWrite) {
  std::vector<float> x(512, 1.0f);
  std::vector<uint8_t> out(4096);
  // Not a whole number of blocks.
  EXPECT_THROW(quantize_row(DType::Q8_0, x.data(), 48, out.data()), Error);
  EXPECT_THROW(quantize_row(DType::Q4_K, x.data(), 288, out.data()), Error);
  EXPECT_THROW(quantize_row(DType::IQ4_XS, x.data(), 32, out.data()), Error);
  // Not finite.
  x[3] = NAN;
  EXPECT_THROW(quantize_row(DType::Q4_0, x.data(), 32, out.data()), Error);
  x[3] = INFINITY;
  EXPECT_THROW(quantize_row(DType::Q6_K, x.data(), 256, out.data()), Error);
  // Types that are read but not written.
  x[3] = 1.0f;
  EXPECT_FALSE(dtype_quantizable(DType::Q2_K));
  EXPECT_FALSE(dtype_quantizable(DType::Q3_K));
  EXPECT_THROW(quantize_row(DType::Q2_K, x.data(), 256, out.data()), Error);
  for (DType type : kAll) EXPECT_TRUE(dtype_quantizable(type));
  try {
    quantize_row(DType::Q5_K, x.data(), 100, out.data());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of the block size 256"), std::string::npos) << e.what();
  }
}

// Float types go through plain conversion.
TEST(Quantize, FloatTypesConvert) {
  const std::vector<float> x = {1.0f, -2.5f, 3.14159f, 0.0f};
  std::vector<uint16_t> half(4);
  quantize_row(DType::F16, x.data(), 4, half.data());
  for (size_t i = 0; i < 4; i++) EXPECT_EQ(half[i], f32_to_f16(x[i]));
}

}  // namespace
}  // namespace lw
