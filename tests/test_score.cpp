// Scoring and perplexity against transformers (tests/fixtures/score/goldens.json, made by
// scripts/make_score_goldens.py: every prefix + choice run alone through transformers), and the
// proof that sharing works: one copy of each prefix, each layer read once per batch of rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "helpers.h"
#include "runtime/engine.h"
#include "score/score.h"

namespace lw {
namespace {

// A choice token's log-probability is its logit minus the log-normaliser, each within the
// engine's logit tolerance against transformers (2e-4, tests/test_engine.cpp): so 4e-4 per token.
constexpr double kPerTokenTolerance = 4e-4;

const nlohmann::json& goldens() {
  static const nlohmann::json json = test::load_json(test::fixture("score/goldens.json"));
  return json;
}

std::vector<ScoreRow> rows_of(const nlohmann::json& model) {
  std::vector<ScoreRow> rows;
  for (const auto& row : model["rows"])
    rows.push_back({row["prefix_ids"].get<std::vector<int>>(), row["choices_ids"].get<std::vector<std::vector<int>>>()});
  return rows;
}

void expect_matches_goldens(const std::vector<RowScore>& scores, const nlohmann::json& model) {
  ASSERT_EQ(scores.size(), model["rows"].size());
  for (size_t r = 0; r < scores.size(); r++) {
    const auto& golden = model["rows"][r];
    ASSERT_EQ(scores[r].choices.size(), golden["results"].size()) << "row " << r;
    for (size_t c = 0; c < scores[r].choices.size(); c++) {
      const ChoiceScore& ours = scores[r].choices[c];
      const auto& theirs = golden["results"][c];
      EXPECT_EQ(ours.tokens, theirs["tokens"].get<int>()) << "row " << r << " choice " << c;
      EXPECT_NEAR(ours.sum_logprob, theirs["sum_logprob"].get<double>(), kPerTokenTolerance * ours.tokens)
          << "row " << r << " choice " << c;
      EXPECT_NEAR(ours.mean_logprob(), theirs["mean_logprob"].get<double>(), kPerTokenTolerance) << "row " << r << " choice " << c;
      EXPECT_EQ(ours.greedy, theirs["greedy"].get<bool>()) << "row " << r << " choice " << c;
    }
    EXPECT_EQ(scores[r].best_by_sum, golden["best_by_sum"].get<int>()) << "row " << r;
    EXPECT_EQ(scores[r].best_by_mean, golden["best_by_mean"].get<int>()) << "row " << r;
  }
}

// A scored line of `layerwise score` output, as a RowScore.
RowScore score_of_line(const nlohmann::json& line) {
  RowScore score;
  for (const auto& choice : line["choices"])
    score.choices.push_back({choice["sum_logprob"].get<double>(), choice["tokens"].get<int>(), choice["greedy"].get<bool>()});
  score.best_by_sum = line["best_by_sum"].get<int>();
  score.best_by_mean = line["best_by_mean"].get<int>();
  return score;
}

std::string model_path(const std::string& name) { return test::source_path(goldens()["models"][name]["path"].get<std::string>()); }

EngineOptions roomy() { return {1ull << 30, 2, true, false}; }

class ScoreGoldens : public ::testing::TestWithParam<std::string> {};

TEST_P(ScoreGoldens, SharedPrefixBatchMatchesTransformersRunningEachChoiceAlone) {
  const auto& model = goldens()["models"][GetParam()];
  Engine engine(model_path(GetParam()), roomy());
  ScoreStats stats;
  expect_matches_goldens(score_rows(engine, rows_of(model), {}, &stats), model);
  EXPECT_EQ(stats.batches, 1) << "every row fits one batch at this budget";
}

TEST_P(ScoreGoldens, RowsScoredOneByOneWithoutSharingGiveTheSameNumbers) {
  const auto& model = goldens()["models"][GetParam()];
  Engine engine(model_path(GetParam()), roomy());
  const auto rows = rows_of(model);
  const auto shared = score_rows(engine, rows, {});
  ScoreOptions alone;
  alone.share_prefix = false;
  alone.max_rows_per_batch = 1;
  const auto separate = score_rows(engine, rows, alone);
  for (size_t r = 0; r < rows.size(); r++)
    for (size_t c = 0; c < rows[r].choices.size(); c++) {
      // The same model in float32, but a batch of 48 tokens or more takes OpenBLAS's sgemm and a
      // lone row the dot-product kernels: the products are rounded in another order, which moves
      // each token's log-probability by float32 rounding carried through the layers (a few 1e-6),
      // far below the goldens' 4e-4 per token.
      EXPECT_NEAR(shared[r].choices[c].sum_logprob, separate[r].choices[c].sum_logprob, 1e-5 * shared[r].choices[c].tokens)
          << r << "," << c;
      EXPECT_EQ(shared[r].choices[c].greedy, separate[r].choices[c].greedy);
    }
}

INSTANTIATE_TEST_SUITE_P(Models, ScoreGoldens, ::testing::Values("mha-f32", "gqa-tied-llama3-f32", "stories260K"),
                         [](const auto& param_info) {
                           std::string name = param_info.param;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

TEST(Score, SharingComputesEachPrefixOnceAndReadsEachLayerOncePerBatch) {
  // A random checkpoint of 4 layers of 12 MB streamed under a budget that holds the batch's
  // activations but not the model; the stories260K rows' ids are valid in its vocabulary. (Four
  // layers count reads as well as sixteen, at a quarter of the products: under the sanitizers the
  // float32 kernels of the rows scored alone run about 40x slower.)
  test::TempDir dir;
  const auto made = test::run({LW_MAKE_CHECKPOINT, "--shape", "small", "--layers", "4", "--out", dir / "small", "--quiet"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const auto rows = rows_of(goldens()["models"]["stories260K"]);
  size_t shared_tokens = 0, unshared_tokens = 0, choices = 0;
  for (const auto& row : rows) {
    shared_tokens += row.prefix.size();
    for (const auto& choice : row.choices) {
      shared_tokens += choice.size();
      unshared_tokens += row.prefix.size() + choice.size();
      choices++;
    }
  }
  const int tokens = static_cast<int>(shared_tokens);
  const RunShape shape{1, tokens, tokens, true, tokens, 128};
  // The least budget that streams every layer yet passes all rows through each layer at once.
  Engine probe(dir / "small", roomy());
  uint64_t budget = probe.plan(shape).minimum_budget;
  for (;; budget += 2u << 20) {
    ASSERT_LT(budget, 1ull << 30);
    Engine sized(dir / "small", {budget, 2, true, false});
    if (sized.plan(shape).tokens_per_sweep >= tokens) break;
  }
  Engine engine(dir / "small", {budget, 2, true, false});
  ASSERT_TRUE(engine.plan(shape).streams());
  ASSERT_GE(engine.plan(shape).tokens_per_sweep, tokens);
  ScoreStats stats;
  const auto shared = score_rows(engine, rows, {}, &stats);
  EXPECT_EQ(stats.tokens, shared_tokens) << "each prefix computed once per row";
  EXPECT_EQ(stats.batches, 1);
  EngineStats engine_stats = engine.stats();
  EXPECT_EQ(engine_stats.sweeps, 1) << "all rows pass each layer together";
  for (size_t u = 1; u < engine_stats.stream.loads_per_unit.size(); u++) {
    if (engine.active_plan().resident[u]) continue;
    EXPECT_LE(engine_stats.stream.loads_per_unit[u], 2u) << "unit " << u << ": read once (plus read-ahead of a next sweep)";
  }

  Engine baseline(dir / "small", {budget, 2, true, false});
  ScoreOptions alone;
  alone.share_prefix = false;
  alone.max_rows_per_batch = 1;
  const auto separate = score_rows(baseline, rows, alone, &stats);
  EXPECT_EQ(stats.tokens, unshared_tokens) << "without sharing, the prefix is computed for every choice";
  EXPECT_EQ(stats.batches, static_cast<int>(choices));
  engine_stats = baseline.stats();
  EXPECT_EQ(engine_stats.sweeps, static_cast<int>(choices));
  for (size_t u = 1; u < engine_stats.stream.loads_per_unit.size(); u++) {
    if (baseline.active_plan().resident[u]) continue;
    EXPECT_GE(engine_stats.stream.loads_per_unit[u], choices) << "unit " << u;
  }
  for (size_t r = 0; r < rows.size(); r++)
    for (size_t c = 0; c < rows[r].choices.size(); c++)
      EXPECT_NEAR(shared[r].choices[c].sum_logprob, separate[r].choices[c].sum_logprob,
                  1e-4 * static_cast<double>(rows[r].choices[c].size()));
}

TEST(Score, RefusesEmptyPrefixesAndChoicesAndUnknownTokens) {
  Engine engine(test::stories_path(), roomy());
  EXPECT_THROW(score_rows(engine, {{{}, {{5}}}}, {}), Error);
  EXPECT_THROW(score_rows(engine, {{{1}, {}}}, {}), Error);
  EXPECT_THROW(score_rows(engine, {{{1}, {{}}}}, {}), Error);
  EXPECT_THROW(score_rows(engine, {{{1, 99999}, {{5}}}}, {}), Error);
}

TEST(Perplexity, MatchesTransformersSlidingWindows) {
  const auto& golden = goldens()["perplexity"];
  // The goldens' token ids come from the tokenizer; the CLI test below checks that path too.
  const auto result = test::layerwise({"tokenize", "--model", test::stories_path(), "--file", test::source_path(golden["text"].get<std::string>())});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const std::vector<int> ids = test::parse_ids(result.out);
  ASSERT_EQ(ids.size(), golden["text_tokens"].get<size_t>());
  Engine engine(test::stories_path(), roomy());
  for (const auto& run : golden["runs"]) {
    const int context = run["context"].get<int>(), stride = run["stride"].get<int>();
    const PerplexityResult ours = perplexity(engine, sliding_windows(ids, context, stride));
    // The exact sums over the tokens each window scores; the guide's own arithmetic weights each
    // window after the first by one token less than it averages over (see the README), which
    // differs when stride < context.
    EXPECT_EQ(ours.tokens_scored, run["exact_tokens"].get<size_t>()) << context << "/" << stride;
    EXPECT_NEAR(ours.nll_sum, run["exact_nll_sum"].get<double>(), kPerTokenTolerance * static_cast<double>(ours.tokens_scored))
        << context << "/" << stride;
    EXPECT_NEAR(ours.perplexity(), run["exact_perplexity"].get<double>(), run["exact_perplexity"].get<double>() * kPerTokenTolerance)
        << context << "/" << stride;
  }
}

std::vector<int> story_ids() {
  const auto result = test::layerwise({"tokenize", "--model", test::stories_path(), "--file",
                                       test::source_path(goldens()["perplexity"]["text"].get<std::string>())});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  return test::parse_ids(result.out);
}

// log p(chunk[j] | chunk[0 .. j)) for j = 1 .. size - 1, from one row that scores the whole chunk.
std::vector<double> every_logprob(Engine& engine, const std::vector<int>& chunk) {
  std::vector<double> out(chunk.size(), NAN);
  ScoreOptions options;
  options.on_logits = [&](size_t, int, int token, const float* logits, int vocab) {
    const double top = *std::max_element(logits, logits + vocab);
    double total = 0;
    for (int i = 0; i < vocab; i++) total += std::exp(static_cast<double>(logits[i]) - top);
    out[static_cast<size_t>(token) + 1] = static_cast<double>(logits[chunk[static_cast<size_t>(token) + 1]]) - top - std::log(total);
  };
  score_rows(engine, {{{chunk[0]}, {std::vector<int>(chunk.begin() + 1, chunk.end())}}}, options);
  return out;
}

TEST(Perplexity, ChunksScoreTheTokensLlamaPerplexityScores) {
  const std::vector<int> ids = story_ids();
  ASSERT_EQ(ids.size(), 500u);
  ASSERT_EQ(ids[0], 1);  // stories260K's tokenizer adds BOS
  // llama-perplexity -c 64: n_chunk = 500 / 64 = 7; chunk i scores text positions
  // 64 i + 32 + 1 .. 64 i + 63 (logits from its positions 32 .. 62): 31 a chunk.
  const PerplexityPlan plan = llama_chunks(ids, 64, 1);
  ASSERT_EQ(plan.windows.size(), 7u);
  std::vector<size_t> expected;
  for (size_t i = 0; i < 7; i++)
    for (size_t p = 64 * i + 33; p < 64 * i + 64; p++) expected.push_back(p);
  EXPECT_EQ(plan.positions(), expected);
  for (size_t i = 0; i < 7; i++) {
    const ScoreRow& chunk = plan.windows[i];
    ASSERT_EQ(chunk.prefix.size(), 33u);
    ASSERT_EQ(chunk.choices.size(), 1u);
    EXPECT_EQ(chunk.prefix[0], 1) << "BOS first in chunk " << i;
    EXPECT_EQ(std::vector<int>(chunk.prefix.begin() + 1, chunk.prefix.end()),
              std::vector<int>(ids.begin() + static_cast<long>(64 * i + 1), ids.begin() + static_cast<long>(64 * i + 33)));
    EXPECT_EQ(chunk.choices[0], std::vector<int>(ids.begin() + static_cast<long>(64 * i + 33), ids.begin() + static_cast<long>(64 * i + 64)));
  }
  EXPECT_EQ(llama_chunks(ids, 64, -1).windows[1].prefix[0], ids[64]);  // no BOS: the text's own token
  EXPECT_EQ(llama_chunks(ids, 500, 1).positions().size(), 249u);      // 500 - 1 - 250
  EXPECT_EQ(llama_chunks(ids, 3, 1).positions().size(), 166u);        // 166 chunks of 1
  EXPECT_THROW(llama_chunks(ids, 501, 1), Error);                      // not one whole chunk
  EXPECT_THROW(llama_chunks(ids, 2, 1), Error);                        // nothing after the half
}

TEST(Perplexity, ChunksSumTheLogprobsOfTheirSecondHalves) {
  const std::vector<int> ids = story_ids();
  const auto& windows = goldens()["perplexity"]["runs"][0];  // context 64, stride 64: the chunks, scored whole
  ASSERT_EQ(windows["context"].get<int>(), 64);
  ASSERT_EQ(windows["stride"].get<int>(), 64);
  Engine engine(test::stories_path(), roomy());
  for (const int bos : {-1, 1}) {
    double expected = 0;
    size_t tokens = 0;
    for (size_t i = 0; i < 7; i++) {
      std::vector<int> chunk(ids.begin() + static_cast<long>(64 * i), ids.begin() + static_cast<long>(64 * i + 64));
      if (bos >= 0) chunk[0] = bos;
      const std::vector<double> logprobs = every_logprob(engine, chunk);
      if (bos < 0) {  // the whole chunk against transformers: window i of the goldens, 63 tokens
        double whole = 0;
        for (size_t j = 1; j < 64; j++) whole -= logprobs[j];
        const auto& golden = windows["windows"][i];
        ASSERT_EQ(golden[3].get<int>(), 63);
        EXPECT_NEAR(whole, 63 * golden[4].get<double>(), kPerTokenTolerance * 63) << "chunk " << i;
      }
      for (size_t j = 33; j < 64; j++) expected -= logprobs[j], tokens++;
    }
    const PerplexityResult ours = perplexity(engine, llama_chunks(ids, 64, bos));
    EXPECT_EQ(ours.windows, 7);
    EXPECT_EQ(ours.tokens_scored, tokens);
    EXPECT_NEAR(ours.nll_sum, expected, 1e-5 * static_cast<double>(tokens)) << "bos " << bos;
  }
}

TEST(ScoreCli, ScoresTextRowsKeepsOrderAndReportsMalformedLines) {
  const auto& model = goldens()["models"]["stories260K"];
  test::TempDir dir;
  std::string input;
  for (size_t r = 0; r < model["rows"].size(); r++) {
    const auto& row = model["rows"][r];
    input += nlohmann::json({{"id", row["id"]}, {"prefix", row["prefix"]}, {"choices", row["choices"]}}).dump() + "\n";
    if (r == 0) input += "{\"id\": \"broken\", \"prefix\": \n";  // line 2: cut short
  }
  input += "{\"id\": \"ids\", \"prefix_ids\": [1, 2], \"choices_ids\": [[3], [4, 5]]}\n";
  test::write_file(dir / "rows.jsonl", input);
  const std::string output = dir / "scores.jsonl";
  const auto result = test::layerwise({"score", "--model", test::stories_path(), "--input", dir / "rows.jsonl", "--output", output});
  EXPECT_EQ(result.exit_code, 1) << "a malformed line makes the run fail after the others are scored";
  EXPECT_NE(result.err.find("rows.jsonl:2: malformed JSON"), std::string::npos) << result.err;
  EXPECT_EQ(result.out, "");
  EXPECT_FALSE(std::filesystem::exists(output + ".tmp"));
  std::vector<nlohmann::json> lines;
  std::istringstream text(test::read_file(output));
  for (std::string line; std::getline(text, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), model["rows"].size() + 2);
  EXPECT_EQ(lines[1]["line"], 2);
  EXPECT_EQ(lines[1]["id"], nullptr);
  std::vector<RowScore> scores;
  size_t row = 0;
  for (size_t i = 0; i < lines.size() - 1; i++) {
    if (i == 1) continue;
    EXPECT_EQ(lines[i]["id"], model["rows"][row++]["id"]);
    scores.push_back(score_of_line(lines[i]));
  }
  expect_matches_goldens(scores, model);  // text tokenized as transformers did: prefix with BOS, choices without
  EXPECT_EQ(lines.back()["id"], "ids");
  EXPECT_EQ(lines.back()["choices"].size(), 2u);
}

// Issue 12: a row the model cannot run (ids outside its vocabulary, more positions than it is
// made for, no choices, an empty choice, an id too large for any vocabulary) is an error line in
// its place; every other row is still scored, as the goldens say, and the run exits 1.
TEST(ScoreCli, RowsTheModelCannotRunAreReportedInTheirPlaceAndTheOthersScored) {
  const auto& model = goldens()["models"]["stories260K"];
  test::TempDir dir;
  std::string too_long;
  for (int i = 0; i < 600; i++) too_long += (i ? ", " : "") + std::string("1");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"id": "vocab", "prefix_ids": [1, 9999], "choices_ids": [[3]]})", "token id 9999 is outside the model's vocabulary (0..511)"},
      {R"({"id": "long", "prefix_ids": [)" + too_long + R"(], "choices_ids": [[3], [4, 5]]})",
       "the prefix (600 tokens) and its longest choice (2) need 602 positions, but the model is made for 512"},
      {R"({"id": "none", "prefix_ids": [1], "choices_ids": []})", "no choices"},
      {R"({"id": "empty", "prefix_ids": [1], "choices_ids": [[3], []]})", "a choice encodes to no tokens"},
      {R"({"id": "huge", "prefix_ids": [1, 1000000000000], "choices_ids": [[3]]})", "holds 1000000000000, which is not a token id"},
      {R"({"id": "negative", "prefix_ids": [1], "choices_ids": [[-3]]})", "holds -3, which is not a token id"},
  };
  std::string input;
  for (size_t r = 0; r < model["rows"].size(); r++) {
    const auto& row = model["rows"][r];
    input += nlohmann::json({{"id", row["id"]}, {"prefix_ids", row["prefix_ids"]}, {"choices_ids", row["choices_ids"]}}).dump() + "\n";
    if (r == 0)
      for (const auto& [line, message] : bad) input += line + "\n";  // lines 2 .. 7
  }
  test::write_file(dir / "rows.jsonl", input);
  const auto result = test::layerwise({"score", "--model", test::stories_path(), "--input", dir / "rows.jsonl", "--quiet"});
  EXPECT_EQ(result.exit_code, 1);
  std::vector<nlohmann::json> lines;
  std::istringstream text(result.out);
  for (std::string line; std::getline(text, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), model["rows"].size() + bad.size());
  for (size_t b = 0; b < bad.size(); b++) {
    const auto& line = lines[1 + b];
    EXPECT_EQ(line["line"], 2 + b);
    ASSERT_TRUE(line.contains("error")) << line.dump();
    EXPECT_NE(line["error"].get<std::string>().find(bad[b].second), std::string::npos) << line.dump();
    EXPECT_NE(result.err.find("rows.jsonl:" + std::to_string(2 + b) + ": "), std::string::npos) << result.err;
  }
  EXPECT_NE(result.err.find("6 line(s) could not be scored"), std::string::npos) << result.err;
  std::vector<RowScore> scores;
  for (size_t i = 0; i < lines.size(); i++) {
    if (i >= 1 && i <= bad.size()) continue;
    scores.push_back(score_of_line(lines[i]));
  }
  expect_matches_goldens(scores, model);

  // Past the context only when asked: the long row is then scored.
  test::write_file(dir / "long.jsonl", bad[1].first + "\n");
  const auto allowed = test::layerwise({"score", "--model", test::stories_path(), "--input", dir / "long.jsonl", "--quiet",
                                        "--allow-long-context"});
  EXPECT_EQ(allowed.exit_code, 0) << allowed.err;
  EXPECT_EQ(nlohmann::json::parse(allowed.out)["choices"].size(), 2u);
}

TEST(ScoreCli, PerplexityPrintsOneJsonLine) {
  const auto& run = goldens()["perplexity"]["runs"][0];
  const auto result = test::layerwise({"perplexity", "--model", test::stories_path(), "--text",
                                       test::source_path(goldens()["perplexity"]["text"].get<std::string>()), "--context",
                                       std::to_string(run["context"].get<int>()), "--stride", std::to_string(run["stride"].get<int>()), "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto json = nlohmann::json::parse(result.out);
  EXPECT_EQ(json["tokens_scored"], run["exact_tokens"]);
  EXPECT_NEAR(json["perplexity"].get<double>(), run["exact_perplexity"].get<double>(),
              run["exact_perplexity"].get<double>() * kPerTokenTolerance);
  // --chunks: llama-perplexity's chunks of --context tokens (7 of 64 here, 31 tokens scored each).
  const auto chunks = test::layerwise({"perplexity", "--model", test::stories_path(), "--text",
                                       test::source_path(goldens()["perplexity"]["text"].get<std::string>()), "--context", "64",
                                       "--chunks", "--quiet"});
  ASSERT_EQ(chunks.exit_code, 0) << chunks.err;
  const auto chunk_json = nlohmann::json::parse(chunks.out);
  EXPECT_EQ(chunk_json["tokens_scored"], 217);
  EXPECT_EQ(chunk_json["chunks"], 7);
  EXPECT_EQ(chunk_json["text_tokens"], 500);
  EXPECT_FALSE(chunk_json.contains("stride"));
  const auto both = test::layerwise({"perplexity", "--model", test::stories_path(), "--text", "x", "--chunks", "--stride", "8"});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_NE(both.err.find("--stride excludes --chunks"), std::string::npos) << both.err;
  const auto bad = test::layerwise({"perplexity", "--model", test::stories_path(), "--text", "/nonexistent.txt"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("/nonexistent.txt"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace lw
