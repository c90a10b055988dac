// lw::dequantize_row / dequantize_in_place against the gguf Python package's reference
// dequantizer: tests/fixtures/gguf/dequant_goldens.json (scripts/make_dequant_goldens.py) holds
// random raw blocks of every handled type and the float32 bit patterns gguf.quants.dequantize
// makes of them. Results must match bit for bit.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/error.h"
#include "format/dequantize.h"
#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace lw {
namespace {

struct Golden {
  std::string name;
  uint32_t type = 0;
  uint64_t elements = 0;
  std::vector<uint8_t> raw;
  std::vector<uint32_t> expected;  // float32 bit patterns
};

std::vector<uint8_t> from_hex(const std::string& hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    throw std::runtime_error(std::string("bad hex digit ") + c);
  };
  if (hex.size() % 2) throw std::runtime_error("odd hex length");
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); i++)
    out[i] = static_cast<uint8_t>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return out;
}

std::vector<uint32_t> bits_from_hex(const std::string& hex) {
  if (hex.size() % 8) throw std::runtime_error("float hex length not a multiple of 8");
  std::vector<uint32_t> out(hex.size() / 8);
  for (size_t i = 0; i < out.size(); i++) out[i] = static_cast<uint32_t>(std::stoul(hex.substr(8 * i, 8), nullptr, 16));
  return out;
}

const std::vector<Golden>& goldens() {
  static const std::vector<Golden> all = [] {
    const std::string path = gguf_test::source_dir() + "/tests/fixtures/gguf/dequant_goldens.json";
    const std::string text = gguf_test::read_file(path);
    if (text.empty()) throw std::runtime_error("cannot read " + path);
    const nlohmann::json doc = nlohmann::json::parse(text);
    std::vector<Golden> out;
    for (const auto& t : doc.at("types")) {
      Golden g;
      g.name = t.at("name").get<std::string>();
      g.type = t.at("type").get<uint32_t>();
      g.elements = t.at("elements").get<uint64_t>();
      g.raw = from_hex(t.at("raw").get<std::string>());
      g.expected = bits_from_hex(t.at("expected").get<std::string>());
      out.push_back(std::move(g));
    }
    return out;
  }();
  return all;
}

uint32_t bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

// Empty when identical, else the first differing index and both bit patterns.
std::string first_difference(const std::vector<uint32_t>& expected, const float* got, uint64_t n) {
  if (expected.size() != n) return "length " + std::to_string(n) + " != expected " + std::to_string(expected.size());
  for (uint64_t i = 0; i < n; i++) {
    if (bits_of(got[i]) != expected[i]) {
      char buf[160];
      float want;
      std::memcpy(&want, &expected[i], 4);
      std::snprintf(buf, sizeof(buf), "first difference at index %llu: got 0x%08x (%.9g), expected 0x%08x (%.9g)",
                    static_cast<unsigned long long>(i), bits_of(got[i]), static_cast<double>(got[i]), expected[i],
                    static_cast<double>(want));
      return buf;
    }
  }
  return "";
}

// The types the dequantizer promises to handle; every one must have goldens.
const char* const kHandled[] = {"F32",  "F16",  "BF16", "Q8_0", "Q4_0", "Q4_1",   "Q5_0",  "Q5_1",
                                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"};

TEST(Dequantize, GoldensCoverEveryHandledType) {
  std::set<std::string> names;
  for (const auto& g : goldens()) {
    names.insert(g.name);
    const GgmlTypeInfo* info = ggml_type_info(g.type);
    ASSERT_NE(info, nullptr) << g.name;
    EXPECT_EQ(std::string(info->name), g.name) << "type id " << g.type;
    EXPECT_TRUE(ggml_type_dequantizable(g.type)) << g.name;
    EXPECT_GT(g.elements, 0u) << g.name;
  }
  for (const char* name : kHandled) EXPECT_TRUE(names.count(name)) << name << " has no goldens";
  // and nothing else claims to be dequantizable
  int dequantizable = 0;
  for (uint32_t t = 0; t < 64; t++) dequantizable += ggml_type_dequantizable(t) ? 1 : 0;
  EXPECT_EQ(dequantizable, static_cast<int>(std::size(kHandled)));
}

TEST(Dequantize, RowBytesMatchGoldens) {
  for (const auto& g : goldens()) {
    EXPECT_EQ(ggml_row_bytes(g.type, g.elements), g.raw.size()) << g.name;
    const GgmlTypeInfo* info = ggml_type_info(g.type);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(ggml_row_bytes(g.type, 0), 0u) << g.name;
    EXPECT_EQ(ggml_row_bytes(g.type, info->block_size), info->type_size) << g.name;
  }
  EXPECT_EQ(ggml_row_bytes(12, 4096), 4096u / 256 * 144);  // Q4_K
  EXPECT_EQ(ggml_row_bytes(0, 7), 28u);                    // F32
  EXPECT_EQ(ggml_row_bytes(16, 256), 66u);  // IQ2_XXS: sized, though not dequantizable
}

TEST(Dequantize, RowMatchesReferenceBitForBit) {
  for (const auto& g : goldens()) {
    SCOPED_TRACE(g.name);
    std::vector<float> out(g.elements, -12345.0f);
    dequantize_row(g.type, g.raw.data(), g.elements, out.data());
    EXPECT_EQ(first_difference(g.expected, out.data(), g.elements), "") << g.name;
  }
}

TEST(Dequantize, RowFromUnalignedSource) {
  for (const auto& g : goldens()) {
    std::vector<uint8_t> shifted(g.raw.size() + 1);
    std::memcpy(shifted.data() + 1, g.raw.data(), g.raw.size());
    std::vector<float> out(g.elements);
    dequantize_row(g.type, shifted.data() + 1, g.elements, out.data());
    EXPECT_EQ(first_difference(g.expected, out.data(), g.elements), "") << g.name;
  }
}

TEST(Dequantize, RowBlockByBlockEqualsWhole) {
  for (const auto& g : goldens()) {
    const GgmlTypeInfo* info = ggml_type_info(g.type);
    ASSERT_NE(info, nullptr);
    std::vector<float> out(g.elements);
    for (uint64_t b = 0; b < g.elements / info->block_size; b++)
      dequantize_row(g.type, g.raw.data() + b * info->type_size, info->block_size, out.data() + b * info->block_size);
    EXPECT_EQ(first_difference(g.expected, out.data(), g.elements), "") << g.name;
  }
}

TEST(Dequantize, InPlaceMatchesReference) {
  for (const auto& g : goldens()) {
    std::vector<float> buffer(g.elements, -1.0f);
    const uint64_t raw_bytes = ggml_row_bytes(g.type, g.elements);
    ASSERT_EQ(raw_bytes, g.raw.size());
    std::memcpy(reinterpret_cast<char*>(buffer.data()) + g.elements * 4 - raw_bytes, g.raw.data(), raw_bytes);
    dequantize_in_place(g.type, buffer.data(), g.elements);
    EXPECT_EQ(first_difference(g.expected, buffer.data(), g.elements), "") << g.name;
  }
}

// Large enough that dequantize_in_place needs several chunks (its local copy is 16 KiB): the
// goldens repeated many times; every repetition must come out like the reference.
TEST(Dequantize, InPlaceOverManyChunks) {
  for (const auto& g : goldens()) {
    const uint64_t reps = 300;
    const uint64_t n = g.elements * reps;
    std::vector<uint8_t> raw;
    for (uint64_t r = 0; r < reps; r++) raw.insert(raw.end(), g.raw.begin(), g.raw.end());
    const uint64_t raw_bytes = ggml_row_bytes(g.type, n);
    ASSERT_EQ(raw_bytes, raw.size());
    std::vector<float> buffer(n, -1.0f);
    std::memcpy(reinterpret_cast<char*>(buffer.data()) + n * 4 - raw_bytes, raw.data(), raw_bytes);
    dequantize_in_place(g.type, buffer.data(), n);
    std::vector<float> row(n);
    dequantize_row(g.type, raw.data(), n, row.data());
    for (uint64_t r = 0; r < reps; r++) {
      const std::string diff = first_difference(g.expected, buffer.data() + r * g.elements, g.elements);
      ASSERT_EQ(diff, "") << g.name << " (in place), repetition " << r;
      ASSERT_EQ(first_difference(g.expected, row.data() + r * g.elements, g.elements), "")
          << g.name << " (row), repetition " << r;
    }
  }
}

// Hand-made blocks whose values can be read off (checked against gguf.quants.dequantize): the
// random goldens cannot show which bits of IQ4_XS's scales_h and scales_l belong to which
// sub-block, these do. Row and in-place paths both.
TEST(Dequantize, Iq4NlNibblesIndexTheLevelTable) {
  uint8_t raw[18] = {0x00, 0x38};  // d = 0.5
  for (int j = 0; j < 16; j++) raw[2 + j] = static_cast<uint8_t>(j | (15 - j) << 4);
  const float levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  float row[32];
  dequantize_row(20, raw, 32, row);
  std::vector<float> in_place(32);
  std::memcpy(reinterpret_cast<char*>(in_place.data()) + 128 - 18, raw, 18);
  dequantize_in_place(20, in_place.data(), 32);
  for (int j = 0; j < 16; j++) {
    EXPECT_EQ(bits_of(row[j]), bits_of(0.5f * levels[j])) << j;            // low nibbles first
    EXPECT_EQ(bits_of(row[16 + j]), bits_of(0.5f * levels[15 - j])) << j;  // then high nibbles
  }
  for (int j = 0; j < 32; j++) EXPECT_EQ(bits_of(in_place[j]), bits_of(row[j])) << j;
}

TEST(Dequantize, Iq4XsSixBitScalesCombineBothHalvesMinus32) {
  uint8_t raw[136] = {};
  raw[0] = 0x00, raw[1] = 0x3C;  // d = 1
  raw[2] = 0x01, raw[3] = 0xC0;  // scales_h: high bits 01 for sub-block 0, 11 for sub-block 7
  raw[4] = 0x05;                 // scales_l[0]: low bits 5 for sub-block 0 (low nibble), 0 for 1
  raw[7] = 0xF0;                 // scales_l[3]: low bits 0 for sub-block 6, 15 for 7 (high nibble)
  std::memset(raw + 8, 0x80, 128);  // every low nibble 0 (level -127), high nibble 8 (level 1)
  float row[256];
  dequantize_row(23, raw, 256, row);
  std::vector<float> in_place(256);
  std::memcpy(reinterpret_cast<char*>(in_place.data()) + 1024 - 136, raw, 136);
  dequantize_in_place(23, in_place.data(), 256);
  // scale - 32: sub-block 0 is (5 | 1 << 4) - 32 = -11, sub-block 7 (15 | 3 << 4) - 32 = 31,
  // the rest 0 - 32.
  const float scale[8] = {-11, -32, -32, -32, -32, -32, -32, 31};
  for (int s = 0; s < 8; s++)
    for (int j = 0; j < 16; j++) {
      EXPECT_EQ(row[32 * s + j], scale[s] * -127.0f) << s << " " << j;
      EXPECT_EQ(row[32 * s + 16 + j], scale[s]) << s << " " << j;
    }
  for (int j = 0; j < 256; j++) EXPECT_EQ(bits_of(in_place[j]), bits_of(row[j])) << j;
}

TEST(Dequantize, RefusesUnknownAndUnsupportedTypes) {
  float out[256];
  uint8_t raw[256] = {};
  EXPECT_THROW(dequantize_row(33, raw, 32, out), Error);    // not a ggml type
  EXPECT_THROW(dequantize_row(999, raw, 32, out), Error);
  EXPECT_THROW(dequantize_row(16, raw, 256, out), Error);   // IQ2_XXS: known but not handled
  EXPECT_THROW(dequantize_row(9, raw, 32, out), Error);     // Q8_1
  EXPECT_THROW(dequantize_in_place(16, out, 256), Error);
  EXPECT_THROW(dequantize_in_place(999, out, 32), Error);
  EXPECT_THROW(ggml_row_bytes(33, 32), Error);
  EXPECT_FALSE(ggml_type_dequantizable(33));
  EXPECT_FALSE(ggml_type_dequantizable(16));
  try {  // the reader names the type (Gguf.RefusesUnsupportedTypes); here its number and what is supported
    dequantize_row(16, raw, 256, out);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ggml type 16 (supported: F32, F16, BF16, Q8_0"), std::string::npos) << e.what();
  }
}

TEST(Dequantize, RefusesCountsNotAMultipleOfTheBlockSize) {
  std::vector<float> out(1024);
  std::vector<uint8_t> raw(1024);
  for (const auto& g : goldens()) {
    const GgmlTypeInfo* info = ggml_type_info(g.type);
    ASSERT_NE(info, nullptr);
    if (info->block_size == 1) continue;
    EXPECT_THROW(dequantize_row(g.type, raw.data(), info->block_size + 1, out.data()), Error) << g.name;
    EXPECT_THROW(dequantize_row(g.type, raw.data(), info->block_size - 1, out.data()), Error) << g.name;
    EXPECT_THROW(dequantize_in_place(g.type, out.data(), info->block_size / 2), Error) << g.name;
    EXPECT_THROW(ggml_row_bytes(g.type, info->block_size * 3 + 7), Error) << g.name;
    try {
      ggml_row_bytes(g.type, 33);
      ADD_FAILURE() << g.name << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(g.name), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(ggml_row_bytes(0, ~uint64_t{0}), Error);  // F32: 4 * (2^64 - 1) bytes overflow
}

TEST(Dequantize, ZeroElementsIsANoOp) {
  for (const auto& g : goldens()) {
    float sentinel = 7.0f;
    dequantize_row(g.type, g.raw.data(), 0, &sentinel);
    dequantize_in_place(g.type, &sentinel, 0);
    EXPECT_EQ(sentinel, 7.0f) << g.name;
  }
}

}  // namespace
}  // namespace lw
