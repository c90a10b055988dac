// The GGUF header reader on hand-built files: every metadata type, nested arrays, tensor infos
// with alignment, a file written by the gguf Python package (checked against what that package
// reads back), and broken files, each refused with an lw::Error naming the file and the problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace lw {
namespace {

using gguf_test::Bytes;
using gguf_test::TempFile;

constexpr uint32_t T_U8 = 0, T_I8 = 1, T_U16 = 2, T_I16 = 3, T_U32 = 4, T_I32 = 5, T_F32 = 6, T_BOOL = 7,
                   T_STRING = 8, T_ARRAY = 9, T_U64 = 10, T_I64 = 11, T_F64 = 12;

GgufFile open_bytes(const TempFile& file) { return GgufFile::open(file.path()); }

// Opens `bytes` and expects an lw::Error whose message names the file and holds every fragment.
void expect_error(const std::string& bytes, std::initializer_list<std::string> fragments,
                  const GgufFile::Options& options = {}) {
  TempFile file(bytes);
  try {
    GgufFile::open(file.path(), options);
    ADD_FAILURE() << "no error; expected one containing '" << *fragments.begin() << "'";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind(file.path() + ": ", 0), 0u) << message;
    for (const auto& fragment : fragments) EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

// ---------------------------------------------------------------- valid files

TEST(GgufReader, EmptyHeaderV3) {
  TempFile file(Bytes().header(3, 0, 0).data);
  GgufFile f = open_bytes(file);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.path(), file.path());
  EXPECT_EQ(f.file_bytes(), 24u);
  EXPECT_EQ(f.header_bytes(), 24u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset(), 32u);
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(f.keys().empty());
  EXPECT_TRUE(f.tensors().empty());
}

TEST(GgufReader, VersionTwoHasTheSameLayout) {
  Bytes b;
  b.header(2, 1, 2);
  b.key("general.architecture", T_STRING).str("llama");
  b.key("llama.block_count", T_U32).u32(22);
  b.str("w").u32(2).u64(4).u64(2).u32(0).u64(0);  // F32 [4, 2]
  b.pad_to(32).zeros(32);
  TempFile file(b.data);
  GgufFile f = open_bytes(file);
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("llama.block_count"), 22u);
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.tensors()[0].bytes, 32u);
  EXPECT_EQ(f.tensors()[0].file_offset, f.data_offset());
}

TEST(GgufReader, EveryScalarType) {
  Bytes b;
  b.header(3, 0, 14);
  b.key("u8", T_U8).u8(250);
  b.key("i8", T_I8).i8(-7);
  b.key("u16", T_U16).u16(65000);
  b.key("i16", T_I16).i16(-32000);
  b.key("u32", T_U32).u32(4000000000u);
  b.key("i32", T_I32).i32(-2000000000);
  b.key("f32", T_F32).f32(0.1f);
  b.key("yes", T_BOOL).u8(1);
  b.key("no", T_BOOL).u8(0);
  b.key("text", T_STRING).str("caf\xC3\xA9 \xE2\x96\x81x");
  b.key("empty", T_STRING).str("");
  b.key("u64", T_U64).u64(18446744073709551615ull);
  b.key("i64", T_I64).i64(std::numeric_limits<int64_t>::min());
  b.key("f64", T_F64).f64(-2.5e-300);
  TempFile file(b.data);
  GgufFile f = open_bytes(file);

  const std::vector<std::string> keys = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                         "yes", "no", "text", "empty", "u64", "i64", "f64"};
  EXPECT_EQ(f.keys(), keys);
  const GgufType types[] = {GgufType::UINT8, GgufType::INT8,    GgufType::UINT16, GgufType::INT16, GgufType::UINT32,
                            GgufType::INT32, GgufType::FLOAT32, GgufType::BOOL,   GgufType::BOOL,  GgufType::STRING,
                            GgufType::STRING, GgufType::UINT64, GgufType::INT64, GgufType::FLOAT64};
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(f.find(keys[i])->type, types[i]) << keys[i];

  EXPECT_EQ(f.get_uint("u8"), 250u);
  EXPECT_EQ(f.get_int("i8"), -7);
  EXPECT_EQ(f.get_uint("u16"), 65000u);
  EXPECT_EQ(f.get_int("i16"), -32000);
  EXPECT_EQ(f.get_uint("u32"), 4000000000u);
  EXPECT_EQ(f.get_int("u32"), 4000000000);
  EXPECT_EQ(f.get_int("i32"), -2000000000);
  EXPECT_EQ(f.get_float("f32"), static_cast<double>(0.1f));
  EXPECT_TRUE(f.get_bool("yes"));
  EXPECT_FALSE(f.get_bool("no"));
  EXPECT_EQ(f.get_string("text"), "caf\xC3\xA9 \xE2\x96\x81x");
  EXPECT_EQ(f.get_string("empty"), "");
  EXPECT_EQ(f.get_uint("u64"), 18446744073709551615ull);
  EXPECT_EQ(f.get_int("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.get_float("f64"), -2.5e-300);
  EXPECT_EQ(f.header_bytes(), f.file_bytes());
}

TEST(GgufReader, AccessorsNameTheKeyOnTypeMismatch) {
  Bytes b;
  b.header(3, 0, 5);
  b.key("name", T_STRING).str("x");
  b.key("negative", T_I32).i32(-1);
  b.key("huge", T_U64).u64(18446744073709551615ull);
  b.key("ints", T_ARRAY).u32(T_I32).u64(2).i32(1).i32(2);
  b.key("flag", T_BOOL).u8(1);
  TempFile file(b.data);
  GgufFile f = open_bytes(file);
  auto expect_key_error = [&](auto&& call, const std::string& fragment) {
    try {
      call();
      ADD_FAILURE() << "no error for " << fragment;
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.rfind(file.path() + ": ", 0), 0u) << message;
      EXPECT_NE(message.find(fragment), std::string::npos) << message;
    }
  };
  expect_key_error([&] { f.get_uint("name"); }, "'name' is a string, not an integer");
  expect_key_error([&] { f.get_string("negative"); }, "'negative' is a int32, not a string");
  expect_key_error([&] { f.get_uint("negative"); }, "'negative' is -1, not a non-negative integer");
  expect_key_error([&] { f.get_int("huge"); }, "too large for a signed 64-bit integer");
  expect_key_error([&] { f.get_float("flag"); }, "'flag' is a bool, not a float");
  expect_key_error([&] { f.get_bool("name"); }, "not a bool");
  expect_key_error([&] { f.get_array_strings("ints"); }, "'ints' is an array of int32, not of strings");
  expect_key_error([&] { f.get_array("flag"); }, "not an array");
  expect_key_error([&] { f.get_string("missing.key"); }, "'missing.key' is missing");
  expect_key_error([&] { f.find_uint("name"); }, "not an integer");

  EXPECT_EQ(f.find_string("name"), "x");
  EXPECT_EQ(f.find_string("absent"), std::nullopt);
  EXPECT_EQ(f.find_uint("absent"), std::nullopt);
  EXPECT_EQ(f.find_int("negative"), -1);
  EXPECT_EQ(f.find_bool("flag"), true);
  EXPECT_EQ(f.find_float("absent"), std::nullopt);
  EXPECT_TRUE(f.has("ints"));
  EXPECT_FALSE(f.has("absent"));
  EXPECT_EQ(f.find("absent"), nullptr);
  EXPECT_EQ(f.get_array_ints("ints"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(f.get_array_floats("ints"), (std::vector<double>{1.0, 2.0}));
}

TEST(GgufReader, ArraysOfEveryElementTypeAndNested) {
  Bytes b;
  b.header(3, 0, 15);
  b.key("a.u8", T_ARRAY).u32(T_U8).u64(3).u8(0).u8(1).u8(255);
  b.key("a.i8", T_ARRAY).u32(T_I8).u64(2).i8(-128).i8(127);
  b.key("a.u16", T_ARRAY).u32(T_U16).u64(1).u16(65535);
  b.key("a.i16", T_ARRAY).u32(T_I16).u64(2).i16(-32768).i16(5);
  b.key("a.u32", T_ARRAY).u32(T_U32).u64(1).u32(4294967295u);
  b.key("a.i32", T_ARRAY).u32(T_I32).u64(3).i32(-1).i32(0).i32(1);
  b.key("a.f32", T_ARRAY).u32(T_F32).u64(2).f32(-741.0f).f32(0.5f);
  b.key("a.bool", T_ARRAY).u32(T_BOOL).u64(3).u8(1).u8(0).u8(1);
  b.key("a.string", T_ARRAY).u32(T_STRING).u64(3).str("<s>").str("").str("\xE2\x96\x81the");
  b.key("a.u64", T_ARRAY).u32(T_U64).u64(2).u64(0).u64(9223372036854775807ull);
  b.key("a.i64", T_ARRAY).u32(T_I64).u64(1).i64(-5);
  b.key("a.f64", T_ARRAY).u32(T_F64).u64(1).f64(1e-300);
  b.key("a.empty", T_ARRAY).u32(T_STRING).u64(0);
  // [[1, 2], [], [3]] of int32, and [[["deep"]]] of strings.
  b.key("a.nested", T_ARRAY).u32(T_ARRAY).u64(3);
  b.u32(T_I32).u64(2).i32(1).i32(2);
  b.u32(T_I32).u64(0);
  b.u32(T_I32).u64(1).i32(3);
  b.key("a.nested3", T_ARRAY).u32(T_ARRAY).u64(1).u32(T_ARRAY).u64(1).u32(T_STRING).u64(1).str("deep");
  TempFile file(b.data);
  GgufFile f = open_bytes(file);

  EXPECT_EQ(f.get_array_ints("a.u8"), (std::vector<int64_t>{0, 1, 255}));
  EXPECT_EQ(f.get_array_ints("a.i8"), (std::vector<int64_t>{-128, 127}));
  EXPECT_EQ(f.get_array_ints("a.u16"), (std::vector<int64_t>{65535}));
  EXPECT_EQ(f.get_array_ints("a.i16"), (std::vector<int64_t>{-32768, 5}));
  EXPECT_EQ(f.get_array_ints("a.u32"), (std::vector<int64_t>{4294967295}));
  EXPECT_EQ(f.get_array_ints("a.i32"), (std::vector<int64_t>{-1, 0, 1}));
  EXPECT_EQ(f.get_array_floats("a.f32"), (std::vector<double>{-741.0, 0.5}));
  const GgufArray& bools = f.get_array("a.bool");
  EXPECT_EQ(bools.element_type, GgufType::BOOL);
  EXPECT_EQ(bools.count, 3u);
  EXPECT_EQ(bools.int_at(0), 1);
  EXPECT_EQ(bools.int_at(1), 0);
  EXPECT_EQ(f.get_array_strings("a.string"), (std::vector<std::string>{"<s>", "", "\xE2\x96\x81the"}));
  EXPECT_EQ(f.get_array_ints("a.u64"), (std::vector<int64_t>{0, 9223372036854775807}));
  EXPECT_EQ(f.get_array_ints("a.i64"), (std::vector<int64_t>{-5}));
  EXPECT_EQ(f.get_array_floats("a.f64"), (std::vector<double>{1e-300}));
  EXPECT_TRUE(f.get_array_strings("a.empty").empty());

  const GgufArray& nested = f.get_array("a.nested");
  EXPECT_EQ(nested.element_type, GgufType::ARRAY);
  ASSERT_EQ(nested.arrays.size(), 3u);
  EXPECT_EQ(nested.arrays[0].element_type, GgufType::INT32);
  EXPECT_EQ(nested.arrays[0].count, 2u);
  EXPECT_EQ(nested.arrays[0].int_at(1), 2);
  EXPECT_EQ(nested.arrays[1].count, 0u);
  EXPECT_EQ(nested.arrays[2].int_at(0), 3);
  const GgufArray& deep = f.get_array("a.nested3");
  ASSERT_EQ(deep.arrays.size(), 1u);
  ASSERT_EQ(deep.arrays[0].arrays.size(), 1u);
  EXPECT_EQ(deep.arrays[0].arrays[0].strings, (std::vector<std::string>{"deep"}));
}

// An array value nested `levels` deep around one uint8.
std::string nested_array_file(int levels) {
  Bytes b;
  b.header(3, 0, 1);
  b.key("deep", T_ARRAY);
  for (int i = 1; i < levels; ++i) b.u32(T_ARRAY).u64(1);
  b.u32(T_U8).u64(1).u8(42);
  return b.data;
}

TEST(GgufReader, NestingIsBounded) {
  TempFile ok(nested_array_file(8));
  EXPECT_NO_THROW(GgufFile::open(ok.path()));
  expect_error(nested_array_file(9), {"nest deeper than 8 levels"});
  expect_error(nested_array_file(100000), {"nest deeper than 8 levels"});
}

TEST(GgufReader, TensorInfosWithAlignment) {
  Bytes b;
  b.header(3, 5, 2);
  b.key("general.architecture", T_STRING).str("llama");
  b.key("general.alignment", T_U32).u32(64);
  b.str("tok_embd.weight").u32(2).u64(8).u64(3).u32(0).u64(0);        // F32 [8, 3]: 96 bytes
  b.str("blk.0.attn_q.weight").u32(2).u64(64).u64(2).u32(2).u64(128);  // Q4_0 [64, 2]: 4 blocks x 18 = 72
  b.str("blk.0.ffn.weight").u32(1).u64(256).u32(14).u64(256);          // Q6_K [256]: 1 block = 210
  b.str("future.weight").u32(1).u64(10).u32(99).u64(512);              // unknown type 99
  b.str("empty").u32(2).u64(0).u64(4).u32(1).u64(576);                 // F16 [0, 4]: no bytes
  b.pad_to(64);
  const size_t data_offset = b.size();
  b.zeros(600);
  TempFile file(b.data);
  GgufFile f = open_bytes(file);

  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset(), data_offset);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  ASSERT_EQ(f.tensors().size(), 5u);
  const GgufTensorInfo& embd = f.tensors()[0];
  EXPECT_EQ(embd.name, "tok_embd.weight");
  EXPECT_EQ(embd.dims, (std::vector<uint64_t>{8, 3}));
  EXPECT_EQ(embd.type, 0u);
  EXPECT_TRUE(embd.known_type);
  EXPECT_EQ(embd.type_name(), "F32");
  EXPECT_EQ(embd.elements(), 24u);
  EXPECT_EQ(embd.bytes, 96u);
  EXPECT_EQ(embd.offset, 0u);
  EXPECT_EQ(embd.file_offset, data_offset);

  const GgufTensorInfo* q = f.find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type_name(), "Q4_0");
  EXPECT_EQ(q->bytes, 72u);
  EXPECT_EQ(q->file_offset, data_offset + 128);
  EXPECT_EQ(f.find_tensor("blk.0.ffn.weight")->bytes, 210u);

  const GgufTensorInfo* future = f.find_tensor("future.weight");
  ASSERT_NE(future, nullptr);
  EXPECT_FALSE(future->known_type);
  EXPECT_EQ(future->type, 99u);
  EXPECT_EQ(future->type_name(), "unknown ggml type 99");
  EXPECT_EQ(future->bytes, 0u);
  EXPECT_EQ(f.find_tensor("empty")->bytes, 0u);
  EXPECT_EQ(f.find_tensor("missing"), nullptr);
}

TEST(GgufReader, TypeTableMatchesGgmlQuantSizes) {
  struct Row {
    uint32_t id;
    const char* name;
    uint32_t block, bytes;
  };
  // gguf (Python) 0.19 GGML_QUANT_SIZES, spelled out.
  const Row rows[] = {{0, "F32", 1, 4},      {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},   {3, "Q4_1", 32, 20},
                      {6, "Q5_0", 32, 22},   {7, "Q5_1", 32, 24},    {8, "Q8_0", 32, 34},   {9, "Q8_1", 32, 40},
                      {10, "Q2_K", 256, 84}, {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
                      {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {16, "IQ2_XXS", 256, 66},
                      {17, "IQ2_XS", 256, 74}, {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
                      {20, "IQ4_NL", 32, 18}, {21, "IQ3_S", 256, 110}, {22, "IQ2_S", 256, 82},
                      {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1}, {25, "I16", 1, 2}, {26, "I32", 1, 4},
                      {27, "I64", 1, 8}, {28, "F64", 1, 8}, {29, "IQ1_M", 256, 56}, {30, "BF16", 1, 2},
                      {34, "TQ1_0", 256, 54}, {35, "TQ2_0", 256, 66}, {39, "MXFP4", 32, 17},
                      {40, "NVFP4", 64, 36}, {41, "Q1_0", 128, 18}};
  for (const Row& row : rows) {
    const GgmlTypeInfo* info = ggml_type_info(row.id);
    ASSERT_NE(info, nullptr) << row.name;
    EXPECT_STREQ(info->name, row.name);
    EXPECT_EQ(info->block_size, row.block) << row.name;
    EXPECT_EQ(info->type_size, row.bytes) << row.name;
  }
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 42u, 1000u}) EXPECT_EQ(ggml_type_info(removed), nullptr);
}

// ---------------------------------------------------------------- a file from the gguf package

double expected_float(const nlohmann::json& v) { return std::stod(v.at("float").get<std::string>()); }

// The leaves of a (possibly nested) array in order, as the Python reader's contents() gives them.
void flatten(const GgufArray& array, std::vector<const GgufArray*>& out) {
  if (array.element_type == GgufType::ARRAY) {
    for (const auto& inner : array.arrays) flatten(inner, out);
  } else {
    out.push_back(&array);
  }
}

void expect_scalar(GgufType type, const nlohmann::json& want, const GgufArray* array, uint64_t index,
                   const GgufValue* value, const std::string& where) {
  switch (type) {
    case GgufType::FLOAT32:
    case GgufType::FLOAT64:
      EXPECT_EQ(array ? array->float_at(index) : value->f, expected_float(want)) << where;
      break;
    case GgufType::BOOL:
      EXPECT_EQ(array ? array->int_at(index) != 0 : value->b, want.get<bool>()) << where;
      break;
    case GgufType::STRING:
      EXPECT_EQ(array ? array->strings.at(index) : value->string, want.get<std::string>()) << where;
      break;
    case GgufType::UINT64:
      EXPECT_EQ(array ? array->uint_at(index) : value->u, want.get<uint64_t>()) << where;
      break;
    case GgufType::UINT8:
    case GgufType::UINT16:
    case GgufType::UINT32:
      EXPECT_EQ(array ? array->uint_at(index) : value->u, want.get<uint64_t>()) << where;
      break;
    default:
      EXPECT_EQ(array ? array->int_at(index) : value->i, want.get<int64_t>()) << where;
      break;
  }
}

void expect_matches_python(const std::string& name) {
  const std::string dir = gguf_test::source_dir() + "/tests/fixtures/gguf/";
  const auto expected = nlohmann::json::parse(gguf_test::read_file(dir + name + ".expected.json"));
  GgufFile f = GgufFile::open(dir + name + ".gguf");
  EXPECT_EQ(f.version(), expected["version"].get<uint32_t>());
  EXPECT_EQ(f.file_bytes(), expected["file_bytes"].get<uint64_t>());
  EXPECT_EQ(f.alignment(), expected["alignment"].get<uint64_t>());
  EXPECT_EQ(f.data_offset(), expected["data_offset"].get<uint64_t>());
  ASSERT_EQ(f.metadata().size(), expected["fields"].size());
  for (size_t i = 0; i < f.metadata().size(); ++i) {
    const auto& want = expected["fields"][i];
    const GgufKeyValue& kv = f.metadata()[i];
    const std::string where = name + " " + kv.key;
    ASSERT_EQ(kv.key, want["key"].get<std::string>());
    const auto& types = want["types"];
    ASSERT_EQ(static_cast<uint32_t>(kv.value.type), types[0].get<uint32_t>()) << where;
    if (kv.value.type != GgufType::ARRAY) {
      expect_scalar(kv.value.type, want["value"], nullptr, 0, &kv.value, where);
      continue;
    }
    // Array types list the element type of each level: [9, 9, 5] is an array of arrays of int32.
    const GgufArray* level = &kv.value.array;
    for (size_t t = 1; t < types.size(); ++t) {
      ASSERT_EQ(static_cast<uint32_t>(level->element_type), types[t].get<uint32_t>()) << where;
      if (level->element_type == GgufType::ARRAY && !level->arrays.empty()) level = &level->arrays[0];
    }
    std::vector<const GgufArray*> leaves;
    flatten(kv.value.array, leaves);
    size_t flat = 0;
    for (const GgufArray* leaf : leaves)
      for (uint64_t e = 0; e < leaf->count; ++e, ++flat) {
        ASSERT_LT(flat, want["value"].size()) << where;
        expect_scalar(leaf->element_type, want["value"][flat], leaf, e, nullptr, where + "[" + std::to_string(flat) + "]");
      }
    EXPECT_EQ(flat, want["value"].size()) << where;
  }
  ASSERT_EQ(f.tensors().size(), expected["tensors"].size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const auto& want = expected["tensors"][i];
    const GgufTensorInfo& t = f.tensors()[i];
    EXPECT_EQ(t.name, want["name"].get<std::string>());
    EXPECT_EQ(t.dims, want["dims"].get<std::vector<uint64_t>>()) << t.name;
    EXPECT_EQ(t.type, want["type"].get<uint32_t>()) << t.name;
    EXPECT_TRUE(t.known_type) << t.name;
    EXPECT_EQ(t.offset, want["offset"].get<uint64_t>()) << t.name;
    EXPECT_EQ(t.bytes, want["bytes"].get<uint64_t>()) << t.name;
    EXPECT_EQ(t.file_offset, f.data_offset() + t.offset) << t.name;
  }
}

TEST(GgufReader, FileWrittenByTheGgufPackage) { expect_matches_python("all-types-v3"); }
TEST(GgufReader, VocabOnlyFileWrittenByTheGgufPackage) { expect_matches_python("vocab-only-v3"); }

TEST(GgufReader, NestedValuesOfThePackageFile) {
  GgufFile f = GgufFile::open(gguf_test::source_dir() + "/tests/fixtures/gguf/all-types-v3.gguf");
  const GgufArray& nested = f.get_array("test.nested");  // [[1, 2], [3], [4, 5, 6]]
  ASSERT_EQ(nested.arrays.size(), 3u);
  EXPECT_EQ(nested.arrays[0].count, 2u);
  EXPECT_EQ(nested.arrays[1].count, 1u);
  EXPECT_EQ(nested.arrays[2].count, 3u);
  EXPECT_EQ(nested.arrays[2].int_at(2), 6);
  EXPECT_EQ(f.get_string("test.string"), "h\xC3\xA9llo \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x98\x80");
}

// ---------------------------------------------------------------- broken files

TEST(GgufReaderErrors, MissingFile) {
  try {
    GgufFile::open("/nonexistent/dir/model.gguf");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.gguf: cannot open"), std::string::npos) << e.what();
  }
}

TEST(GgufReaderErrors, WrongMagic) {
  expect_error(Bytes().bytes("GGML").u32(3).u64(0).u64(0).data, {"not a GGUF file", "'GGML'"});
  expect_error(Bytes().bytes("gguf").u32(3).u64(0).u64(0).data, {"not a GGUF file"});
  expect_error(std::string("\x89PNG\r\n\x1a\n", 8) + std::string(16, '\0'), {"not a GGUF file", "\\x89PNG"});
  expect_error("", {"truncated", "the magic"});
  expect_error("GG", {"truncated", "the magic"});
}

TEST(GgufReaderErrors, UnsupportedVersions) {
  expect_error(Bytes().header(1, 0, 0).data, {"GGUF version 1 is not supported"});
  expect_error(Bytes().header(99, 0, 0).data, {"GGUF version 99 is not supported", "only versions 2 and 3"});
  expect_error(Bytes().header(0, 0, 0).data, {"GGUF version 0 is not supported"});
  expect_error(Bytes().header(0x03000000u, 0, 0).data, {"big-endian"});
}

// A valid file with metadata of several types, arrays and tensors.
std::string sample_file() {
  Bytes b;
  b.header(3, 2, 5);
  b.key("general.architecture", T_STRING).str("llama");
  b.key("general.alignment", T_U32).u32(32);
  b.key("tokenizer.ggml.tokens", T_ARRAY).u32(T_STRING).u64(3).str("<s>").str("a").str("bc");
  b.key("tokenizer.ggml.scores", T_ARRAY).u32(T_F32).u64(3).f32(0).f32(-1).f32(-2);
  b.key("nested", T_ARRAY).u32(T_ARRAY).u64(1).u32(T_U16).u64(2).u16(1).u16(2);
  b.str("a.weight").u32(2).u64(4).u64(2).u32(0).u64(0);  // F32: 32 bytes
  b.str("b.weight").u32(1).u64(32).u32(8).u64(32);        // Q8_0: 34 bytes
  b.pad_to(32).zeros(32 + 34);
  return b.data;
}

TEST(GgufReaderErrors, TruncatedAtEveryByte) {
  const std::string whole = sample_file();
  {
    TempFile ok(whole);
    GgufFile f = GgufFile::open(ok.path());
    ASSERT_EQ(f.tensors().size(), 2u);
    ASSERT_EQ(f.tensors()[1].file_offset + f.tensors()[1].bytes, whole.size());
  }
  TempFile file("");
  for (size_t size = 0; size < whole.size(); ++size) {
    file.write(whole.substr(0, size));
    try {
      GgufFile::open(file.path());
      ADD_FAILURE() << "a file cut to " << size << " bytes was accepted";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.rfind(file.path() + ": ", 0), 0u) << message;
      const bool says_why = message.find("truncated") != std::string::npos ||
                            message.find("past the end") != std::string::npos ||
                            message.find("cannot fit") != std::string::npos;
      EXPECT_TRUE(says_why) << size << ": " << message;
    }
  }
}

TEST(GgufReaderErrors, TruncatedPackageFileAtEveryByte) {
  const std::string whole =
      gguf_test::read_file(gguf_test::source_dir() + "/tests/fixtures/gguf/all-types-v3.gguf");
  ASSERT_GT(whole.size(), 1000u);
  TempFile file(whole);
  // The writer pads the file after the last tensor: cutting that padding is harmless.
  uint64_t data_end = 0;
  const GgufFile full = GgufFile::open(file.path());
  for (const auto& t : full.tensors()) data_end = std::max(data_end, t.file_offset + t.bytes);
  ASSERT_EQ(data_end, 2118u);
  for (size_t size = 0; size < data_end; ++size) {
    file.write(whole.substr(0, size));
    EXPECT_THROW(GgufFile::open(file.path()), Error) << size;
  }
}

TEST(GgufReaderErrors, StringLengthPastTheEnd) {
  expect_error(Bytes().header(3, 0, 1).u64(1000).bytes("general").data,
               {"metadata key name at offset 24 has length 1000", "past the end of the file"});
  expect_error(Bytes().header(3, 0, 1).key("k", T_STRING).u64(~0ull).data,
               {"string value", "length 18446744073709551615", "past the end"});
  expect_error(Bytes().header(3, 0, 1).key("k", T_ARRAY).u32(T_STRING).u64(2).str("ok").u64(1u << 30).data,
               {"string array element", "past the end"});
  expect_error(Bytes().header(3, 1, 0).u64(1ull << 40).bytes(std::string(30, 'x')).data, {"tensor name", "past the end"});
}

TEST(GgufReaderErrors, HugeCountsAreRefusedBeforeAllocating) {
  expect_error(Bytes().header(3, 0, 1ull << 62).data, {"metadata key/value count 4611686018427387904 is too large"});
  expect_error(Bytes().header(3, ~0ull, 0).data, {"tensor count 18446744073709551615 is too large"});
  expect_error(Bytes().header(3, 1ull << 40, 1).key("k", T_U8).u8(1).data, {"tensor count", "too large"});
  for (uint32_t type : {T_U8, T_U64, T_STRING, T_ARRAY, T_BOOL}) {
    expect_error(Bytes().header(3, 0, 1).key("k", T_ARRAY).u32(type).u64(1ull << 60).data,
                 {"array of 1152921504606846976", "cannot fit"});
    expect_error(Bytes().header(3, 0, 1).key("k", T_ARRAY).u32(type).u64(~0ull).data, {"cannot fit"});
  }
  // A nested array whose inner count is hostile.
  expect_error(Bytes().header(3, 0, 1).key("k", T_ARRAY).u32(T_ARRAY).u64(1).u32(T_F64).u64(1ull << 50).data,
               {"cannot fit"});
}

TEST(GgufReaderErrors, BadTypeIds) {
  expect_error(Bytes().header(3, 0, 1).key("k", 13).u32(0).data, {"value type at offset", "is 13, not a GGUF value type"});
  expect_error(Bytes().header(3, 0, 1).key("k", 0xFFFFFFFFu).u8(0).data, {"is 4294967295, not a GGUF value type"});
  expect_error(Bytes().header(3, 0, 1).key("k", T_ARRAY).u32(42).u64(0).data, {"array element type", "is 42"});
  expect_error(Bytes().header(3, 0, 1).key("k", T_ARRAY).u32(T_ARRAY).u64(1).u32(77).u64(0).data,
               {"array element type", "is 77"});
}

TEST(GgufReaderErrors, BadValues) {
  expect_error(Bytes().header(3, 0, 1).key("k", T_BOOL).u8(2).data, {"bool value 2 is neither 0 nor 1"});
  expect_error(Bytes().header(3, 0, 1).key("k", T_ARRAY).u32(T_BOOL).u64(2).u8(0).u8(7).data, {"bool value 7"});
  expect_error(Bytes().header(3, 0, 2).key("k", T_U8).u8(1).key("k", T_U8).u8(2).data, {"duplicate metadata key 'k'"});
  expect_error(Bytes().header(3, 0, 1).key("", T_U8).u8(1).zeros(8).data, {"metadata key 0 has an empty name"});
  expect_error(Bytes().header(3, 0, 2).key("bad\x01key", T_U8).u8(1).key("bad\x01key", T_U8).u8(1).data,
               {"'bad\\x01key'"});
}

TEST(GgufReaderErrors, BadAlignment) {
  expect_error(Bytes().header(3, 0, 1).key("general.alignment", T_U64).u64(32).data,
               {"general.alignment must be a uint32, not a uint64"});
  expect_error(Bytes().header(3, 0, 1).key("general.alignment", T_U32).u32(0).data, {"general.alignment 0 is not a power of two"});
  expect_error(Bytes().header(3, 0, 1).key("general.alignment", T_U32).u32(48).data, {"general.alignment 48 is not a power of two"});
}

// A file with one tensor info and `data_bytes` of data after the header.
std::string one_tensor(uint32_t n_dims, std::vector<uint64_t> dims, uint32_t type, uint64_t offset, size_t data_bytes,
                       uint32_t alignment = 32) {
  Bytes b;
  b.header(3, 1, 1);
  b.key("general.alignment", T_U32).u32(alignment);
  b.str("t").u32(n_dims);
  for (uint64_t d : dims) b.u64(d);
  b.u32(type).u64(offset);
  b.pad_to(alignment).zeros(data_bytes);
  return b.data;
}

TEST(GgufReaderErrors, TensorProblems) {
  {
    TempFile ok(one_tensor(2, {4, 4}, 0, 0, 64));
    EXPECT_NO_THROW(GgufFile::open(ok.path()));
  }
  expect_error(one_tensor(2, {4, 4}, 0, 0, 63), {"tensor 't' (F32, 64 bytes at data offset 0) lies past the end of the file"});
  expect_error(one_tensor(2, {4, 4}, 0, 64, 64), {"lies past the end of the file"});
  expect_error(one_tensor(2, {4, 4}, 0, 16, 128), {"tensor 't' has data offset 16, not a multiple of the alignment 32"});
  expect_error(one_tensor(1, {4}, 0, 128, 128, 8), {"past the end"});  // aligned to 8, but past the end
  expect_error(one_tensor(1, {4}, 0, ~0ull - 7, 128, 8), {"past the end"});
  expect_error(one_tensor(5, {1, 1, 1, 1, 1}, 0, 0, 64), {"has 5 dimensions; GGUF allows at most 4"});
  expect_error(one_tensor(2, {16, 1}, 2, 0, 64), {"Q4_0", "first dimension of 16", "block size 32"});
  expect_error(one_tensor(2, {1ull << 40, 1ull << 40}, 0, 0, 64), {"element count overflows"});
  expect_error(one_tensor(1, {~0ull}, 0, 0, 64), {"element count overflows"});
  expect_error(one_tensor(4, {1ull << 20, 1ull << 20, 1ull << 20, 8}, 0, 0, 64), {"overflows"});
  expect_error(one_tensor(1, {1ull << 62}, 0, 0, 64), {"byte size overflows"});
  // An unknown type is kept (its size is unknown), but its data must start inside the file.
  {
    TempFile ok(one_tensor(1, {10}, 77, 0, 64));
    GgufFile f = GgufFile::open(ok.path());
    EXPECT_FALSE(f.tensors()[0].known_type);
    EXPECT_EQ(f.tensors()[0].type_name(), "unknown ggml type 77");
  }
  expect_error(one_tensor(1, {10}, 77, 1024, 64), {"unknown ggml type 77, unknown size", "past the end"});

  Bytes dup;
  dup.header(3, 2, 0);
  dup.str("w").u32(1).u64(8).u32(0).u64(0);
  dup.str("w").u32(1).u64(8).u32(0).u64(32);
  dup.pad_to(32).zeros(64);
  expect_error(dup.data, {"duplicate tensor name 'w'"});

  Bytes overlap;
  overlap.header(3, 2, 0);
  overlap.str("a").u32(1).u64(16).u32(0).u64(0);   // 64 bytes at 0
  overlap.str("b").u32(1).u64(8).u32(0).u64(32);   // 32 bytes at 32
  overlap.pad_to(32).zeros(128);
  expect_error(overlap.data, {"tensors 'a' and 'b' overlap"});

  Bytes unnamed;
  unnamed.header(3, 1, 0).str("").u32(1).u64(8).u32(0).u64(0).pad_to(32).zeros(32);
  expect_error(unnamed.data, {"tensor info 0 has an empty name"});
}

TEST(GgufReaderErrors, HeaderLargerThanTheLimit) {
  Bytes b;
  b.header(3, 0, 1).key("tokenizer.ggml.tokens", T_ARRAY).u32(T_STRING).u64(1000);
  for (int i = 0; i < 1000; ++i) b.str("token" + std::to_string(i));
  GgufFile::Options small;
  small.max_header_bytes = 4096;
  expect_error(b.data, {"header is larger than the 4096 bytes this reader accepts"}, small);
  TempFile ok(b.data);
  EXPECT_EQ(GgufFile::open(ok.path()).get_array_strings("tokenizer.ggml.tokens").size(), 1000u);
}

}  // namespace
}  // namespace lw
