// File formats and small conversions: sizes, float types, safetensors, the split manifest.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/sizes.h"
#include "format/dtype.h"
#include "format/manifest.h"
#include "format/safetensors.h"
#include "helpers.h"

namespace lw {
namespace {

TEST(Sizes, ParsesBinaryAndDecimalUnits) {
  EXPECT_EQ(parse_size("4GiB"), 4ull << 30);
  EXPECT_EQ(parse_size("300MiB"), 300ull << 20);
  EXPECT_EQ(parse_size("1.5G"), 1500000000ull);
  EXPECT_EQ(parse_size("65536"), 65536ull);
  EXPECT_EQ(parse_size("2gib"), 2ull << 30);
  EXPECT_THROW(parse_size("lots"), Error);
  EXPECT_THROW(parse_size("4XB"), Error);
  EXPECT_THROW(parse_size("0"), Error);
  EXPECT_THROW(parse_size(""), Error);
  EXPECT_EQ(format_size(3ull << 30), "3.00 GiB");
  EXPECT_EQ(format_size(512), "512 B");
}

TEST(DType, Float16MatchesIeeeValues) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                  // halfway to 2^16 rounds to even: inf
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie rounds to even
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);         // tie at half the smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);
}

TEST(DType, EveryFloat16RoundTrips) {
  for (uint32_t bits = 0; bits < 0x10000; bits++) {
    uint16_t h = static_cast<uint16_t>(bits);
    float value = f16_to_f32(h);
    if (std::isnan(value)) continue;
    ASSERT_EQ(f32_to_f16(value), h) << "bits " << bits;
  }
}

TEST(DType, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  uint32_t halfway = 0x3f808000;  // exactly between 0x3f80 and 0x3f81
  float value;
  std::memcpy(&value, &halfway, 4);
  EXPECT_EQ(f32_to_bf16(value), 0x3f80);
  halfway = 0x3f818000;
  std::memcpy(&value, &halfway, 4);
  EXPECT_EQ(f32_to_bf16(value), 0x3f82);
}

// A safetensors file from a header and a data section.
std::string safetensors_bytes(const std::string& header, size_t data_bytes) {
  std::string bytes(8, '\0');
  uint64_t length = header.size();
  for (int i = 0; i < 8; i++) bytes[static_cast<size_t>(i)] = static_cast<char>(length >> (8 * i));
  return bytes + header + std::string(data_bytes, '\x01');
}

std::string open_error(const std::string& bytes) {
  test::TempDir dir;
  const std::string path = dir / "model.safetensors";
  test::write_file(path, bytes);
  try {
    open_safetensors(path);
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << "message should name the file: " << message;
    return message;
  }
  return "";
}

TEST(Safetensors, ReadsAValidHeader) {
  test::TempDir dir;
  const std::string path = dir / "ok.safetensors";
  test::write_file(path, safetensors_bytes(R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", 20));
  SafetensorsFile file = open_safetensors(path);
  ASSERT_EQ(file.header.tensors.size(), 2u);
  EXPECT_EQ(file.header.tensors[0].name, "a");  // sorted by offset
  EXPECT_EQ(file.header.find("b")->shape, std::vector<int64_t>({2}));
  EXPECT_EQ(file.header.metadata.at("format"), "pt");
  EXPECT_EQ(file.data_offset, 8 + file.file_bytes - 8 - 20);
}

TEST(Safetensors, RejectsBrokenFiles) {
  const std::string good = R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  EXPECT_NE(open_error("abc").find("too short"), std::string::npos);
  EXPECT_NE(open_error(safetensors_bytes(good, 16).substr(0, 20)).find("past the end of the file"), std::string::npos);
  EXPECT_NE(open_error(safetensors_bytes(good, 8)).find("past the end of the data"), std::string::npos);  // truncated data
  EXPECT_NE(open_error(safetensors_bytes("{not json", 0)).find("not valid JSON"), std::string::npos);
  EXPECT_NE(open_error(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", 16)).find("need 16"),
            std::string::npos);
  EXPECT_NE(open_error(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 16)).find("overlap"),
            std::string::npos);
  EXPECT_NE(open_error(safetensors_bytes(R"({"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})", 8)).find("unknown dtype"),
            std::string::npos);
  EXPECT_NE(open_error(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)).find("shape"),
            std::string::npos);
  EXPECT_NE(open_error(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8)).find("backwards"),
            std::string::npos);
  EXPECT_NE(open_error(safetensors_bytes(R"([1,2])", 0)).find("not a JSON object"), std::string::npos);
  // A header length far beyond the file.
  std::string huge(8, '\xff');
  EXPECT_NE(open_error(huge + "{}").find("implausible"), std::string::npos);
}

TEST(Safetensors, WriterProducesAlignedReadableFiles) {
  test::TempDir dir;
  const std::string path = dir / "unit.safetensors";
  std::vector<float> a = {1, 2, 3};
  std::vector<uint16_t> b = {0x3c00, 0x4000};
  {
    SafetensorsWriter writer(path, {{"a", DType::F32, {3}}, {"b", DType::F16, {2}}}, {{"format", "pt"}});
    writer.append(a.data(), 8);  // in pieces, across tensor boundaries
    writer.append(reinterpret_cast<const char*>(a.data()) + 8, 4);
    writer.append(b.data(), 4);
    EXPECT_FALSE(std::filesystem::exists(path)) << "the final name appears only at commit";
    auto result = writer.commit();
    EXPECT_EQ(result.bytes, std::filesystem::file_size(path));
  }
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  SafetensorsFile file = open_safetensors(path);
  EXPECT_EQ(file.data_offset % 4096, 0u);
  const auto* tb = file.header.find("b");
  ASSERT_NE(tb, nullptr);
  EXPECT_EQ(tb->begin % 64, 0u);
  std::string bytes = test::read_file(path);
  float first;
  std::memcpy(&first, bytes.data() + file.data_offset + 8, 4);
  EXPECT_EQ(first, 3.0f);
  uint16_t half;
  std::memcpy(&half, bytes.data() + file.data_offset + tb->begin + 2, 2);
  EXPECT_EQ(half, 0x4000);
}

TEST(Safetensors, AbandonedWriterLeavesNothing) {
  test::TempDir dir;
  const std::string path = dir / "unit.safetensors";
  {
    SafetensorsWriter writer(path, {{"a", DType::F32, {3}}});
    float value = 1;
    writer.append(&value, 4);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Manifest, RoundTripsAndRejectsHostileEntries) {
  Manifest manifest;
  manifest.dtype = "f16";
  manifest.config = {{"model_type", "llama"}};
  manifest.units = {{"embed", "embed.safetensors", 123, 0x0123456789abcdefull}};
  Manifest back = parse_manifest(manifest_to_json(manifest), "m.json");
  ASSERT_EQ(back.units.size(), 1u);
  EXPECT_EQ(back.units[0].xxh3, 0x0123456789abcdefull);
  EXPECT_EQ(back.units[0].bytes, 123u);
  EXPECT_EQ(back.dtype, "f16");

  auto error_of = [](const std::string& text) {
    try {
      parse_manifest(text, "m.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::string text = manifest_to_json(manifest);
  EXPECT_NE(error_of("{").find("m.json: manifest is not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(std::string(text).replace(text.find("embed.safetensors"), 17, "../../etc/passwd")).find("not a plain file name"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(text).replace(text.find("0123456789abcdef"), 16, "xyz")).find("checksum"), std::string::npos);
  EXPECT_NE(error_of(std::string(text).replace(text.find("\"version\": 1"), 12, "\"version\": 9")).find("version"),
            std::string::npos);
}

}  // namespace
}  // namespace lw
