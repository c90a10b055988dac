// The forward pass against references we did not write: Hugging Face transformers' logits and
// greedy ids for generated checkpoints (tests/fixtures, made by scripts/make_fixtures.py), and
// llama2.c's greedy output for the real stories260K model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "checkpoint/split.h"
#include "common/error.h"
#include "format/safetensors.h"
#include "runtime/engine.h"
#include "runtime/generate.h"
#include "helpers.h"

namespace lw {
namespace {

// Logit tolerance against transformers' float32 logits (logits are O(1): std about 1.8). The
// engine computes in float32 from the stored weights, as the goldens do; only summation order
// differs.
constexpr double kLogitTolerance = 2e-4;
// Against transformers computing natively in half precision (activations rounded at every op),
// the float32 engine differs by the rounding transformers does; the script measured 0.023 (f16)
// and 0.30 (bf16) between native and float32 runs.
constexpr double kNativeF16Tolerance = 0.05;
constexpr double kNativeBF16Tolerance = 0.6;

const nlohmann::json& goldens() {
  static const nlohmann::json json = test::load_json(test::fixture("goldens.json"));
  return json;
}

// The goldens are float32 computations: products and the KV cache in float32 too, whatever the
// stored dtype (by default F16 and BF16 checkpoints keep F16 / BF16 caches: tests/test_kv_dtype.cpp).
EngineOptions exact(uint64_t budget) {
  EngineOptions options{budget, 2, true, false, DType::F32};
  options.kv_dtype = DType::F32;
  return options;
}
EngineOptions roomy() { return exact(1ull << 30); }

class Transformers : public ::testing::TestWithParam<std::string> {};

TEST_P(Transformers, LogitsOfEachPromptMatch) {
  const auto& golden = goldens()[GetParam()];
  Engine engine(test::fixture(GetParam()), roomy());
  auto prompts = test::golden_prompts(golden);
  for (size_t p = 0; p < prompts.size(); p++) {
    auto logits = prompt_logits(engine, {prompts[p]});
    EXPECT_LT(test::max_logit_difference(logits[0], golden["logits"][p]), kLogitTolerance) << "prompt " << p;
  }
}

TEST_P(Transformers, BatchOfTwoPromptsOfDifferentLengthsMatches) {
  const auto& golden = goldens()[GetParam()];
  Engine engine(test::fixture(GetParam()), roomy());
  auto prompts = test::golden_prompts(golden);
  std::vector<std::vector<int>> batch;
  for (const auto& index : golden["batch"]["prompts"]) batch.push_back(prompts[index.get<size_t>()]);
  auto logits = prompt_logits(engine, batch);
  for (size_t b = 0; b < batch.size(); b++)
    EXPECT_LT(test::max_logit_difference(logits[b], golden["batch"]["logits"][b]), kLogitTolerance) << "batch row " << b;
}

TEST_P(Transformers, GreedyContinuationsMatchExactly) {
  const auto& golden = goldens()[GetParam()];
  Engine engine(test::fixture(GetParam()), roomy());
  auto prompts = test::golden_prompts(golden);
  GenerateOptions options;
  options.max_new_tokens = 16;
  options.stop_at_eos = false;  // the goldens were generated with EOS switched off
  for (size_t p = 0; p < prompts.size(); p++)
    EXPECT_EQ(generate(engine, {prompts[p]}, options)[0], golden["greedy"][p].get<std::vector<int>>()) << "prompt " << p;
  // The same prompts as one batch give the same continuations. Not for dynamic RoPE: there the
  // frequencies depend on the longest sequence of the pass, in transformers as here.
  if (GetParam() == "dynamic-f32") return;
  auto together = generate(engine, prompts, options);
  for (size_t p = 0; p < prompts.size(); p++) EXPECT_EQ(together[p], golden["greedy"][p].get<std::vector<int>>());
}

TEST_P(Transformers, SplitDirectoryGivesIdenticalLogits) {
  const auto& golden = goldens()[GetParam()];
  auto prompts = test::golden_prompts(golden);
  test::TempDir dir;
  split_checkpoint({test::fixture(GetParam()), dir / "split", std::nullopt, true});
  Engine original(test::fixture(GetParam()), roomy());
  Engine split(dir / "split", roomy());
  EXPECT_EQ(prompt_logits(split, prompts), prompt_logits(original, prompts));
}

TEST_P(Transformers, StreamedRunGivesIdenticalLogitsToResident) {
  const auto& golden = goldens()[GetParam()];
  auto prompts = test::golden_prompts(golden);
  if (GetParam() == "dynamic-f32") {
    // Dynamic RoPE depends on the longest position of each pass, so cutting a prompt longer than
    // the trained context into chunks changes it (as it would in transformers); keep the prompts
    // that fit the trained context.
    prompts.pop_back();
  }
  Engine resident(test::fixture(GetParam()), roomy());
  auto expected = prompt_logits(resident, prompts);
  // The least budget this request runs in: one streaming buffer, nothing resident.
  size_t total = 0, longest = 0;
  for (const auto& p : prompts) total += p.size(), longest = std::max(longest, p.size());
  const RunShape shape{static_cast<int>(prompts.size()), static_cast<int>(longest), static_cast<int>(total), true};
  const uint64_t minimum = resident.plan(shape).minimum_budget;
  Engine streamed(test::fixture(GetParam()), exact(minimum));
  EXPECT_EQ(prompt_logits(streamed, prompts), expected);
  const EngineStats stats = streamed.stats();
  EXPECT_GT(stats.sweeps, 1) << "a minimal budget should cut the prefill into several sweeps";
  // Each unit is re-read every sweep; the reader may have started one more pass before the end.
  for (size_t u = 1; u < stats.stream.loads_per_unit.size(); u++) {
    EXPECT_GE(stats.stream.loads_per_unit[u], static_cast<uint64_t>(stats.sweeps)) << "unit " << u;
    EXPECT_LE(stats.stream.loads_per_unit[u], static_cast<uint64_t>(stats.sweeps) + 1) << "unit " << u;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Transformers,
                         ::testing::Values("mha-f32", "gqa-tied-llama3-f32", "mqa-headdim-linear-bias-f32", "gqa-f16",
                                           "gqa-bf16", "sharded-f32", "dynamic-f32"),
                         [](const auto& param_info) {
                           std::string name = param_info.param;
                           for (char& c : name) if (c == '-') c = '_';
                           return name;
                         });

TEST(TransformersNative, HalfPrecisionLogitsAreWithinTheStatedTolerance) {
  for (auto [name, tolerance] : {std::pair{"gqa-f16", kNativeF16Tolerance}, std::pair{"gqa-bf16", kNativeBF16Tolerance}}) {
    const auto& golden = goldens()[name];
    ASSERT_TRUE(golden.contains("native_logits")) << name;
    Engine engine(test::fixture(name), roomy());
    auto logits = prompt_logits(engine, {test::golden_prompts(golden)[0]});
    EXPECT_LT(test::max_logit_difference(logits[0], golden["native_logits"][0]), tolerance) << name;
  }
}

TEST(TransformersNative, Bf16ProductsOfABf16CheckpointStayWithinTransformersOwnBf16Error) {
  // By default a BF16 checkpoint multiplies in BF16 (AMX where present) once 16 tokens pass a
  // layer: all three prompts as one batch do. Rounding activations to bfloat16 moves the logits
  // by less than transformers' own native bfloat16 run moves them from float32 (0.30).
  // (The cache stays float32 here: this measures the products alone; a BF16 cache on top is
  // tests/test_kv_dtype.cpp's.)
  const auto& golden = goldens()["gqa-bf16"];
  EngineOptions options{1ull << 30, 2, true, false};
  options.kv_dtype = DType::F32;
  Engine engine(test::fixture("gqa-bf16"), options);
  EXPECT_EQ(engine.compute_dtype(), DType::BF16);
  const auto prompts = test::golden_prompts(golden);
  size_t tokens = 0;
  for (const auto& p : prompts) tokens += p.size();
  ASSERT_GE(tokens, 16u);
  const auto logits = prompt_logits(engine, prompts);
  double worst = 0;
  for (size_t p = 0; p < prompts.size(); p++) worst = std::max(worst, test::max_logit_difference(logits[p], golden["logits"][p]));
  EXPECT_LT(worst, 0.30);
  if (*engine.matrix_units()) {
    EXPECT_GT(worst, 1e-4) << "the products did not run in bf16";
  }
  Engine exact(test::fixture("gqa-bf16"), roomy());
  EXPECT_EQ(exact.compute_dtype(), DType::F32);
}

TEST(TransformersNative, HalfPrecisionSplitOfAFloat32Checkpoint) {
  // --dtype bf16 rounds each weight once; logits move by about what transformers' own bf16 does.
  test::TempDir dir;
  split_checkpoint({test::fixture("mha-f32"), dir / "bf16", DType::BF16, true});
  const auto& golden = goldens()["mha-f32"];
  Engine engine(dir / "bf16", roomy());
  auto logits = prompt_logits(engine, {test::golden_prompts(golden)[0]});
  const double difference = test::max_logit_difference(logits[0], golden["logits"][0]);
  EXPECT_GT(difference, 1e-4) << "weights were not converted";
  EXPECT_LT(difference, kNativeBF16Tolerance);
}

// stories260K: llama2.c's greedy outputs, reproduced exactly.
const nlohmann::json& stories_reference() {
  static const nlohmann::json json = test::load_json(test::stories_path() + "/reference/greedy.json");
  return json;
}

void expect_stories_greedy(Engine& engine) {
  GenerateOptions options;
  options.stop_at_eos = false;  // run.c stops only at BOS
  for (const auto& entry : stories_reference()) {
    auto expected = entry["generated_ids"].get<std::vector<int>>();
    options.max_new_tokens = static_cast<int>(expected.size());
    EXPECT_EQ(generate(engine, {entry["prompt_ids"].get<std::vector<int>>()}, options)[0], expected)
        << "prompt \"" << entry["prompt"].get<std::string>() << "\"";
  }
}

// Sets `count` float32 values of tensor `name` in a safetensors file, from element `first` on.
void poison_tensor(const std::string& path, const std::string& name, uint64_t first, int count, float value) {
  const SafetensorsFile file = open_safetensors(path);
  const SafetensorsTensor* tensor = file.header.find(name);
  ASSERT_TRUE(tensor) << name;
  ASSERT_EQ(tensor->dtype_name, "F32");
  ASSERT_LE(first + static_cast<uint64_t>(count), tensor->elements());
  std::string bytes = test::read_file(path);
  for (int i = 0; i < count; i++)
    std::memcpy(bytes.data() + file.data_offset + tensor->begin + 4 * (first + static_cast<uint64_t>(i)), &value, 4);
  test::write_file(path, bytes);
}

struct Stopped {
  std::string message;
  std::vector<int> tokens;  // handed out before the error
};

Stopped generate_until_error(const std::string& model, const std::vector<int>& prompt, int max_new_tokens) {
  Engine engine(model, roomy());
  GenerateOptions options;
  options.stop_at_eos = false;
  options.max_new_tokens = max_new_tokens;
  Stopped stopped;
  try {
    generate(engine, {prompt}, options, [&](int, int token) { stopped.tokens.push_back(token); });
    ADD_FAILURE() << "no error";
  } catch (const Error& error) {
    stopped.message = error.what();
  }
  return stopped;
}

TEST(NonFinite, WeightsThatAreNanOrInfiniteStopTheRunNamingTheLayerAndFile) {
  for (float bad : {NAN, INFINITY}) {
    SCOPED_TRACE(bad);
    test::TempDir dir;
    const std::string model = dir / "model", file = model + "/model.safetensors";
    test::copy_dir(test::stories_path(), model);
    poison_tensor(file, "model.layers.2.mlp.down_proj.weight", 1000, 64, bad);
    const Stopped stopped = generate_until_error(model, {1}, 8);
    EXPECT_EQ(stopped.message.rfind(file + ": layer 2 (model.layers.2.*) gives NaN or infinite hidden states", 0), 0u) << stopped.message;
    EXPECT_TRUE(stopped.tokens.empty()) << "a token was sampled from non-finite logits";
  }
}

TEST(NonFinite, ANanHeadRowStopsTheRunBeforeAnyToken) {
  // stories260K ties its head to the embedding: a NaN row gives a NaN logit at every step.
  test::TempDir dir;
  const std::string model = dir / "model", file = model + "/model.safetensors";
  test::copy_dir(test::stories_path(), model);
  poison_tensor(file, "model.embed_tokens.weight", 261 * 64, 1, NAN);
  const Stopped stopped = generate_until_error(model, {1}, 8);
  EXPECT_EQ(stopped.message.rfind(file + ": the output head (final norm and lm_head) gives NaN or infinite logits", 0), 0u)
      << stopped.message;
  EXPECT_TRUE(stopped.tokens.empty());
}

TEST(NonFinite, ABadEmbeddingRowMetLaterStopsAtThatStepAndSaysSo) {
  // mha-f32 (untied head): the third greedy token's embedding row is NaN, so the first three
  // tokens are sound and the sweep that feeds the third back stops.
  const auto& golden = goldens()["mha-f32"];
  const std::vector<int> prompt = test::golden_prompts(golden)[0];
  const std::vector<int> greedy = golden["greedy"][0].get<std::vector<int>>();
  const int third = greedy[2];
  ASSERT_EQ(std::count(prompt.begin(), prompt.end(), third) + std::count(greedy.begin(), greedy.begin() + 2, third), 0);
  test::TempDir dir;
  const std::string model = dir / "model", file = model + "/model.safetensors";
  test::copy_dir(test::fixture("mha-f32"), model);
  const auto hidden = static_cast<uint64_t>(test::load_json(model + "/config.json")["hidden_size"].get<int>());
  poison_tensor(file, "model.embed_tokens.weight", static_cast<uint64_t>(third) * hidden, 1, NAN);
  const Stopped stopped = generate_until_error(model, prompt, 8);
  EXPECT_EQ(stopped.tokens, std::vector<int>(greedy.begin(), greedy.begin() + 3));
  EXPECT_EQ(stopped.message.rfind(file + ": the embedding rows of this sweep's tokens are NaN or infinite", 0), 0u) << stopped.message;
  EXPECT_NE(stopped.message.find("(while computing new token 4; the 3 before it are sound)"), std::string::npos) << stopped.message;
}

TEST(Stories260K, MatchesLlama2cFromTheCheckpoint) {
  Engine engine(test::stories_path(), roomy());
  expect_stories_greedy(engine);
  // Fully resident: every unit read exactly once per run, whatever the number of steps.
  for (size_t u = 1; u < engine.stats().stream.loads_per_unit.size(); u++)
    EXPECT_EQ(engine.stats().stream.loads_per_unit[u], stories_reference().size());
}

TEST(Stories260K, MatchesLlama2cFromASplitDirectory) {
  test::TempDir dir;
  split_checkpoint({test::stories_path(), dir / "split", std::nullopt, true});
  EXPECT_EQ(verify_split(dir / "split", true), 7);
  Engine engine(dir / "split", roomy());
  expect_stories_greedy(engine);
}

TEST(Stories260K, MatchesLlama2cWhenEveryLayerIsReReadEveryStep) {
  Engine probe(test::stories_path(), roomy());
  const auto& entry = stories_reference()[0];
  const int steps = static_cast<int>(entry["generated_ids"].size());
  const uint64_t minimum = probe.plan({1, 1 + steps, 1, false}).minimum_budget;
  Engine engine(test::stories_path(), {minimum, 2, true, false});
  GenerateOptions options;
  options.stop_at_eos = false;
  options.max_new_tokens = steps;
  EXPECT_EQ(generate(engine, {entry["prompt_ids"].get<std::vector<int>>()}, options)[0],
            entry["generated_ids"].get<std::vector<int>>());
  const EngineStats stats = engine.stats();
  EXPECT_EQ(stats.sweeps, steps);  // one sweep per token: prompt of one token, then steps - 1
  for (size_t u = 1; u < stats.stream.loads_per_unit.size(); u++) {
    EXPECT_GE(stats.stream.loads_per_unit[u], static_cast<uint64_t>(steps)) << "unit " << u;
    EXPECT_LE(stats.stream.loads_per_unit[u], static_cast<uint64_t>(steps) + 1) << "unit " << u;
  }
}

}  // namespace
}  // namespace lw
