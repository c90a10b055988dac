// GGUF checkpoints end to end: tiny models written the way llama.cpp's converter writes them
// (q/k rows permuted, F32 / F16 / Q8_0 / Q4_1) against transformers loading the same files
// (tests/fixtures/gguf_models, scripts/make_gguf_fixtures.py), and hostile files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "checkpoint/checkpoint.h"
#include "checkpoint/split.h"
#include "common/error.h"
#include "gguf/gguf.h"
#include "runtime/engine.h"
#include "runtime/generate.h"
#include "helpers.h"

namespace lw {
namespace {

// As for the Hugging Face fixtures: float32 from the same weights, summation order differs.
// transformers dequantizes with the gguf package; the engine's dequantization is bit-exact with
// it (tests/gguf/test_dequantize.cpp), so quantized files need no wider tolerance.
constexpr double kLogitTolerance = 2e-4;

std::string model_path(const std::string& file) { return test::fixture("gguf_models/" + file); }

const nlohmann::json& goldens() {
  static const nlohmann::json json = test::load_json(test::fixture("gguf_models/goldens.json"));
  return json;
}

EngineOptions roomy() { return {1ull << 30, 2, true, false}; }
// What transformers computes from the file: float32 products on exactly dequantized blocks and a
// float32 KV cache. (The defaults for block files, q8 products and an f16 cache, round
// activations and keys: DefaultProducts* below, tests/test_kv_dtype.cpp.)
EngineOptions exact(uint64_t budget = 1ull << 30) {
  EngineOptions options{budget, 2, true, false};
  options.compute_dtype = DType::F32;
  options.kv_dtype = DType::F32;
  return options;
}

class GgufModel : public ::testing::TestWithParam<std::string> {
 protected:
  const nlohmann::json& golden() const { return goldens()[GetParam()]; }
};

TEST_P(GgufModel, LogitsMatchTransformersLoadingTheSameFile) {
  Engine engine(model_path(GetParam()), exact());
  auto prompts = test::golden_prompts(golden());
  for (size_t p = 0; p < prompts.size(); p++) {
    auto logits = prompt_logits(engine, {prompts[p]});
    EXPECT_LT(test::max_logit_difference(logits[0], golden()["logits"][p]), kLogitTolerance) << "prompt " << p;
  }
}

TEST_P(GgufModel, GreedyContinuationsMatchExactlyAloneAndBatched) {
  Engine engine(model_path(GetParam()), exact());
  auto prompts = test::golden_prompts(golden());
  GenerateOptions options;
  options.max_new_tokens = 16;
  options.stop_at_eos = false;
  for (size_t p = 0; p < prompts.size(); p++)
    EXPECT_EQ(generate(engine, {prompts[p]}, options)[0], golden()["greedy"][p].get<std::vector<int>>()) << "prompt " << p;
  auto together = generate(engine, prompts, options);
  for (size_t p = 0; p < prompts.size(); p++) EXPECT_EQ(together[p], golden()["greedy"][p].get<std::vector<int>>());
}

TEST_P(GgufModel, SplitAndMinimumBudgetGiveIdenticalLogits) {
  auto prompts = test::golden_prompts(golden());
  Engine resident(model_path(GetParam()), roomy());
  const auto expected = prompt_logits(resident, prompts);

  test::TempDir dir;
  const SplitResult result = split_checkpoint({model_path(GetParam()), dir / "split", std::nullopt, true});
  EXPECT_EQ(result.units_written, static_cast<int>(resident.checkpoint().units.size()));
  Engine split(dir / "split", roomy());
  EXPECT_EQ(prompt_logits(split, prompts), expected);
  // The split holds each tensor as the file stores it (blocks stay blocks), in as many bytes.
  for (size_t u = 0; u < resident.checkpoint().units.size(); u++) {
    const UnitSource& from = resident.checkpoint().units[u];
    const UnitSource& to = split.checkpoint().units[u];
    EXPECT_EQ(to.loaded_bytes(), from.loaded_bytes()) << from.recipe.name;
    for (size_t i = 0; i < from.tensors.size(); i++) {
      EXPECT_EQ(to.tensors[i].dtype, from.tensors[i].dtype) << from.tensors[i].name;
      EXPECT_EQ(to.tensors[i].stored, from.tensors[i].dtype) << from.tensors[i].name;
    }
  }
  EXPECT_EQ(verify_split(dir / "split", true), static_cast<int>(resident.checkpoint().units.size()));

  size_t total = 0, longest = 0;
  for (const auto& p : prompts) total += p.size(), longest = std::max(longest, p.size());
  const RunShape shape{static_cast<int>(prompts.size()), static_cast<int>(longest), static_cast<int>(total), true};
  EngineOptions least = roomy();
  least.max_memory = resident.plan(shape).minimum_budget;
  Engine streamed(model_path(GetParam()), least);
  EXPECT_EQ(prompt_logits(streamed, prompts), expected);
  const EngineStats stats = streamed.stats();
  EXPECT_GT(stats.sweeps, 1);
  for (size_t u = 1; u < stats.stream.loads_per_unit.size(); u++)
    EXPECT_GE(stats.stream.loads_per_unit[u], static_cast<uint64_t>(stats.sweeps)) << "unit " << u;
}

INSTANTIATE_TEST_SUITE_P(Files, GgufModel, ::testing::Values("mha-f32.gguf", "mha-q8_0.gguf", "mha-q4_1.gguf", "gqa-f16.gguf"),
                         [](const auto& param_info) {
                           std::string name = param_info.param.substr(0, param_info.param.find('.'));
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

TEST(Gguf, F32FileReproducesTheHuggingFaceCheckpointItWasConvertedFrom) {
  // mha-f32.gguf holds tests/fixtures/mha-f32's weights, q/k permuted by the converter: undoing
  // the permutation must give back the Hugging Face model's own transformers logits.
  const nlohmann::json hf = test::load_json(test::fixture("goldens.json"))["mha-f32"];
  Engine engine(model_path("mha-f32.gguf"), roomy());
  auto prompts = test::golden_prompts(hf);
  for (size_t p = 0; p < prompts.size(); p++)
    EXPECT_LT(test::max_logit_difference(prompt_logits(engine, {prompts[p]})[0], hf["logits"][p]), kLogitTolerance) << "prompt " << p;
}

TEST(Gguf, MetadataMapsToTheSameConfigurationAsConfigJson) {
  for (const char* name : {"mha-f32", "gqa-f16"}) {
    const Checkpoint gguf = Checkpoint::open(model_path(std::string(name) + ".gguf"));
    const Checkpoint hf = Checkpoint::open(test::fixture(name));
    const ModelConfig &a = gguf.config, &b = hf.config;
    EXPECT_EQ(gguf.format, Checkpoint::Format::Gguf);
    EXPECT_EQ(a.architecture, b.architecture);
    EXPECT_EQ(a.vocab_size, b.vocab_size);
    EXPECT_EQ(a.hidden_size, b.hidden_size);
    EXPECT_EQ(a.intermediate_size, b.intermediate_size);
    EXPECT_EQ(a.num_layers, b.num_layers);
    EXPECT_EQ(a.num_heads, b.num_heads);
    EXPECT_EQ(a.num_kv_heads, b.num_kv_heads) << name;
    EXPECT_EQ(a.head_dim, b.head_dim);
    EXPECT_EQ(a.max_position, b.max_position);
    EXPECT_EQ(static_cast<float>(a.rms_norm_eps), static_cast<float>(b.rms_norm_eps));
    EXPECT_EQ(a.rope.type, b.rope.type);
    EXPECT_EQ(static_cast<float>(a.rope.theta), static_cast<float>(b.rope.theta));
    EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
    EXPECT_EQ(a.bos_token_id, b.bos_token_id);
    EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
    EXPECT_EQ(gguf.parameter_count(), hf.parameter_count());
  }
}

TEST(Gguf, RotaryRowsAreRestoredToHuggingFaceOrder) {
  // Two heads of head_dim 4, rows of 2 floats: stored row 2i + j is Hugging Face row j * 2 + i.
  TensorLocation tensor{"blk.0.attn_q.weight", 0, 0, 8 * 2 * 4, DType::F32, {8, 2}, DType::F32, 2};
  std::vector<float> rows(16);
  const int stored_to_hf[4] = {0, 2, 1, 3};
  for (int head = 0; head < 2; head++)
    for (int r = 0; r < 4; r++)
      for (int c = 0; c < 2; c++) rows[static_cast<size_t>((head * 4 + r) * 2 + c)] = static_cast<float>(100 * head + 10 * stored_to_hf[r] + c);
  decode_rows(tensor, reinterpret_cast<char*>(rows.data()), 8);
  for (int head = 0; head < 2; head++)
    for (int r = 0; r < 4; r++)
      for (int c = 0; c < 2; c++)
        EXPECT_EQ(rows[static_cast<size_t>((head * 4 + r) * 2 + c)], static_cast<float>(100 * head + 10 * r + c));
}

// ---- hostile files ----

std::string read_bytes(const std::string& path) { return test::read_file(path); }

// Offset just past the length-prefixed string `text` as stored in a GGUF header.
size_t after_gguf_string(const std::string& bytes, const std::string& text) {
  std::string stored(8, '\0');
  const uint64_t length = text.size();
  std::memcpy(stored.data(), &length, 8);
  stored += text;
  const size_t at = bytes.find(stored);
  EXPECT_NE(at, std::string::npos) << text;
  return at + stored.size();
}

struct HostileCase {
  const char* what;
  std::string bytes;
  std::string says;  // part of the expected message
};

std::vector<HostileCase> hostile_files() {
  const std::string good = read_bytes(model_path("mha-q8_0.gguf"));
  std::vector<HostileCase> cases;
  cases.push_back({"truncated in the header", good.substr(0, 200), "cannot fit in the 176 bytes that follow"});
  cases.push_back({"tensor data past the end", good.substr(0, good.size() - 100), "past the end"});
  std::string magic = good;
  std::memcpy(magic.data(), "GGML", 4);
  cases.push_back({"wrong magic", magic, "not a GGUF file"});
  std::string version = good;
  const uint32_t future = 99;
  std::memcpy(version.data() + 4, &future, 4);
  cases.push_back({"unsupported version", version, "version 99"});
  std::string type = good;
  {  // tensor info: name | u32 n_dims | u64 dims[n_dims] | u32 type | u64 offset
    const size_t at = after_gguf_string(type, "blk.0.attn_q.weight");
    uint32_t dims = 0;
    std::memcpy(&dims, type.data() + at, 4);
    const uint32_t unknown = 250;
    std::memcpy(type.data() + at + 4 + 8 * dims, &unknown, 4);
  }
  cases.push_back({"unknown tensor type", type, "unknown ggml type 250"});
  std::string unsupported = good;
  {  // the last tensor (its data ends the file) as Q8_1, the file cut to its size
    const GgufFile file = GgufFile::open(model_path("mha-q8_0.gguf"));
    const GgufTensorInfo* last = &file.tensors().front();
    for (const auto& info : file.tensors())
      if (info.file_offset > last->file_offset) last = &info;
    const size_t at = after_gguf_string(unsupported, last->name);
    uint32_t dims = 0;
    std::memcpy(&dims, unsupported.data() + at, 4);
    const uint32_t q8_1 = 9;
    std::memcpy(unsupported.data() + at + 4 + 8 * dims, &q8_1, 4);
    unsupported.resize(last->file_offset + ggml_row_bytes(q8_1, last->elements()));
    cases.push_back({"a known type this build does not compute on", unsupported,
                     "tensor '" + last->name + "' has type Q8_1, which this build cannot load (supported: F32, F16, BF16, Q8_0, Q4_0"});
  }
  std::string architecture = good;
  {  // key | u32 value type (8 = string) | string value
    const size_t at = after_gguf_string(architecture, "general.architecture") + 4 + 8;
    EXPECT_EQ(architecture.substr(at, 5), "llama");
    std::memcpy(architecture.data() + at, "gemma", 5);
  }
  cases.push_back({"an architecture we do not run", architecture, "architecture 'gemma' is not supported"});
  for (const float value : {INFINITY, NAN}) {  // key | u32 value type (6 = float32) | value
    std::string rope = good;
    const size_t at = after_gguf_string(rope, "llama.rope.freq_base") + 4;
    std::memcpy(rope.data() + at, &value, 4);
    cases.push_back({"rope.freq_base not finite", rope, std::isnan(value) ? "nan, not a finite number" : "is inf, not a finite number"});
  }
  return cases;
}

TEST(Gguf, NanWeightsStopTheRunNamingTheFileAndLayer) {
  // GGUF files carry no checksum: non-finite weights are caught by what they produce.
  std::string bytes = read_bytes(model_path("mha-f32.gguf"));
  const GgufTensorInfo* tensor = nullptr;
  const GgufFile file = GgufFile::open(model_path("mha-f32.gguf"));
  for (const auto& info : file.tensors())
    if (info.name == "blk.1.ffn_down.weight") tensor = &info;
  ASSERT_TRUE(tensor);
  ASSERT_EQ(tensor->type_name(), "F32");
  const float nan = NAN;
  for (uint64_t i = 0; i < 16; i++) std::memcpy(bytes.data() + tensor->file_offset + 4 * i, &nan, 4);
  test::TempDir dir;
  const std::string path = dir / "model.gguf";
  test::write_file(path, bytes);
  Engine engine(path, roomy());
  GenerateOptions options;
  options.max_new_tokens = 4;
  int tokens = 0;
  try {
    generate(engine, {{1, 2, 3}}, options, [&](int, int) { tokens++; });
    ADD_FAILURE() << "no error";
  } catch (const Error& error) {
    EXPECT_EQ(std::string(error.what()).rfind(path + ": layer 1 (blk.1.*) gives NaN or infinite hidden states", 0), 0u) << error.what();
  }
  EXPECT_EQ(tokens, 0);
}

TEST(Gguf, BlockCountBelowTheFilesLayersIsAnErrorNamingThem) {
  std::string bytes = read_bytes(model_path("mha-f32.gguf"));
  const GgufFile original = GgufFile::open(model_path("mha-f32.gguf"));
  const uint64_t layers = original.get_uint("llama.block_count");
  ASSERT_GE(layers, 2u);
  int tensors_past_first = 0;
  for (const auto& info : original.tensors()) tensors_past_first += info.name.rfind("blk.0.", 0) != 0 && info.name.rfind("blk.", 0) == 0;
  // key | u32 value type (4 = uint32) | value
  const size_t at = after_gguf_string(bytes, "llama.block_count");
  uint32_t type = 0;
  std::memcpy(&type, bytes.data() + at, 4);
  ASSERT_EQ(type, 4u);
  const uint32_t one = 1;
  std::memcpy(bytes.data() + at + 4, &one, 4);
  test::TempDir dir;
  const std::string path = dir / "model.gguf";
  test::write_file(path, bytes);
  std::string layer_list;
  for (uint64_t layer = 1; layer < layers; layer++) layer_list += (layer > 1 ? " blk." : "blk.") + std::to_string(layer) + ".*";
  const std::string expected = path + ": " + std::to_string(tensors_past_first) + " tensors the configuration does not use: " +
                               layer_list + " (its metadata says llama.block_count 1;";
  try {
    Checkpoint::open(path);
    ADD_FAILURE() << "a file with " << layers << " blocks opened as 1";
  } catch (const Error& error) {
    EXPECT_EQ(std::string(error.what()).rfind(expected, 0), 0u) << error.what();
  }
}

TEST(Gguf, HostileFilesGetAClearMessageAndNothingHalfWritten) {
  for (const HostileCase& hostile : hostile_files()) {
    SCOPED_TRACE(hostile.what);
    test::TempDir dir;
    const std::string path = dir / "model.gguf";
    test::write_file(path, hostile.bytes);
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"generate", "--model", path, "--prompt-ids", "1 2 3", "--max-new-tokens", "2"},
          std::vector<std::string>{"info", "--model", path},
          std::vector<std::string>{"split", "--model", path, "--out", dir / "split", "--quiet"}}) {
      const auto result = test::layerwise(args);
      EXPECT_EQ(result.exit_code, 1) << args[0] << ": " << result.err;
      EXPECT_EQ(result.out, "") << args[0];
      EXPECT_NE(result.err.find("layerwise: error: " + path + ": "), std::string::npos) << args[0] << ": " << result.err;
      EXPECT_NE(result.err.find(hostile.says), std::string::npos) << args[0] << ": " << result.err;
    }
    EXPECT_FALSE(std::filesystem::exists(dir / "split/manifest.json"));
  }
}

TEST(Gguf, CliRunsAGgufFileAndSplitsIt) {
  const auto& golden = goldens()["mha-q4_1.gguf"];
  const auto prompt = test::golden_prompts(golden)[0];
  std::string ids;
  for (int id : prompt) ids += (ids.empty() ? "" : " ") + std::to_string(id);
  const std::string path = model_path("mha-q4_1.gguf");
  auto result = test::layerwise({"generate", "--model", path, "--prompt-ids", ids, "--max-new-tokens", "16", "--ignore-eos",
                                 "--output-ids", "--compute-dtype", "f32", "--kv-dtype", "f32", "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(test::parse_ids(result.out), golden["greedy"][0].get<std::vector<int>>());

  result = test::layerwise({"info", "--model", path});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  // Blocks stay blocks in memory: each unit holds what it stores.
  EXPECT_NE(result.out.find("(GGUF)\nweights       F32 x7, Q4_1 x22, Q8_0 x1\n"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("  layer.0    6.50 KiB -> 6.50 KiB  F32 x2, Q4_1 x7\n"), std::string::npos) << result.out;

  test::TempDir dir;
  result = test::layerwise({"split", "--model", path, "--out", dir / "bf16", "--dtype", "bf16", "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const Checkpoint split = Checkpoint::open(dir / "bf16");
  EXPECT_EQ(split.split_dtype, "bf16");
  for (const auto& unit : split.units)
    for (const auto& tensor : unit.tensors) EXPECT_EQ(tensor.dtype, DType::BF16) << tensor.name;
  EXPECT_TRUE(std::filesystem::exists(dir / "bf16/tokenizer.json"));
  result = test::layerwise({"split", "--out", dir / "bf16", "--verify", "--quiet"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
}

}  // namespace
}  // namespace lw
