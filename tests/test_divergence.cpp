// `perplexity --save-logprobs` / `--kl-divergence` (score/divergence.h): the saved file, the KL
// divergence it gives, and files it must refuse.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "helpers.h"
#include "score/divergence.h"

namespace lw {
namespace {

// KL(p || q) of two distributions given as logits, in double.
double reference_divergence(const std::vector<float>& p_logits, const std::vector<float>& q_logits) {
  auto log_probs = [](const std::vector<float>& logits) {
    double total = 0;
    for (float l : logits) total += std::exp(static_cast<double>(l));
    std::vector<double> out;
    for (float l : logits) out.push_back(static_cast<double>(l) - std::log(total));
    return out;
  };
  const auto p = log_probs(p_logits), q = log_probs(q_logits);
  double kl = 0;
  for (size_t i = 0; i < p.size(); i++) kl += std::exp(p[i]) * (p[i] - q[i]);
  return kl;
}

TEST(Divergence, MatchesTheDefinitionAndIsZeroForTheSameLogits) {
  test::TempDir dir;
  const std::string path = dir / "base.lp";
  const std::vector<int> tokens = {5, 1, 4, 2};
  const std::vector<std::vector<float>> base = {{0, 1, 2, 3, -1}, {2, 2, 2, 2, 2}, {-3, 0.5f, 4, 1, 0}};
  const std::vector<std::vector<float>> other = {{0, 1, 2, 3, -1}, {1, 2, 3, 2, 1}, {4, 0.5f, -3, 1, 0}};
  {
    LogprobWriter writer(path, 5, tokens, {1, 2, 3});
    for (size_t position : {3, 1, 2}) writer.add(position, base[position - 1].data());  // any order
    writer.commit();
  }
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  DivergenceMeter meter(path, 5, tokens, {1, 2, 3});
  for (size_t position = 1; position <= 3; position++) meter.add(position, other[position - 1].data());
  const DivergenceSummary s = meter.summary();
  EXPECT_EQ(s.tokens, 3u);
  std::vector<double> expected;
  for (size_t i = 0; i < 3; i++) expected.push_back(reference_divergence(base[i], other[i]));
  EXPECT_EQ(expected[0], 0.0);
  EXPECT_NEAR(s.mean, (expected[0] + expected[1] + expected[2]) / 3, 1e-6);
  EXPECT_NEAR(s.max, std::max(expected[1], expected[2]), 1e-6);
  EXPECT_GT(s.max, 0.5);
  EXPECT_NEAR(s.same_top, 1.0 / 3, 1e-12);  // position 1 only: 2 has ties broken to 0 vs 2; 3 has 2 vs 0

  DivergenceMeter same(path, 5, tokens, {1, 2, 3});
  for (size_t position = 1; position <= 3; position++) same.add(position, base[position - 1].data());
  EXPECT_EQ(same.summary().mean, 0.0);
  EXPECT_EQ(same.summary().same_top, 1.0);
}

TEST(Divergence, SavesAndComparesOnlyTheGivenPositions) {
  test::TempDir dir;
  const std::string path = dir / "base.lp";
  const std::vector<int> tokens = {5, 1, 4, 2, 3};
  const std::vector<std::vector<float>> logits = {{0, 1, 2, 3, -1}, {-3, 0.5f, 4, 1, 0}};
  {
    LogprobWriter writer(path, 5, tokens, {2, 4});
    EXPECT_THROW(writer.add(3, logits[0].data()), Error);  // not one to save
    writer.add(4, logits[1].data());
    writer.add(2, logits[0].data());
    writer.commit();
  }
  EXPECT_EQ(std::filesystem::file_size(path), 32u + 5 * 4 + 2 * 8 + 2 * 5 * 4);
  DivergenceMeter meter(path, 5, tokens, {2, 4});
  meter.add(2, logits[1].data());
  meter.add(4, logits[1].data());
  const DivergenceSummary s = meter.summary();
  EXPECT_EQ(s.tokens, 2u);
  EXPECT_NEAR(s.mean, reference_divergence(logits[0], logits[1]) / 2, 1e-6);
  EXPECT_EQ(s.same_top, 0.5);
  EXPECT_THROW(meter.add(3, logits[0].data()), Error);
  EXPECT_THROW(LogprobWriter(dir / "bad.lp", 5, tokens, {2, 2}), Error);  // must ascend
  EXPECT_THROW(LogprobWriter(dir / "bad.lp", 5, tokens, {0}), Error);     // nothing predicts position 0
  EXPECT_THROW(LogprobWriter(dir / "bad.lp", 5, tokens, {5}), Error);     // past the text
}

TEST(Divergence, AnUncommittedFileIsRemoved) {
  test::TempDir dir;
  {
    LogprobWriter writer(dir / "base.lp", 3, {1, 2, 3}, {1, 2});
    const float logits[3] = {0, 1, 2};
    writer.add(1, logits);
    EXPECT_THROW(writer.commit(), Error);  // position 2 missing
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "base.lp"));
  EXPECT_FALSE(std::filesystem::exists(dir / "base.lp.tmp"));
}

TEST(Divergence, FilesForAnotherTextOrVocabularyOrTruncatedAreRefusedByName) {
  test::TempDir dir;
  const std::string path = dir / "base.lp";
  {
    LogprobWriter writer(path, 3, {1, 2, 3}, {1, 2});
    const float logits[3] = {0, 1, 2};
    writer.add(1, logits);
    writer.add(2, logits);
    writer.commit();
  }
  auto message = [](auto&& make) {
    try {
      make();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message([&] { DivergenceMeter(path, 4, {1, 2, 3}, {1, 2}); }),
            path + ": saved for a vocabulary of 3 tokens; this model has 4");
  EXPECT_EQ(message([&] { DivergenceMeter(path, 3, {1, 2}, {1}); }), path + ": saved for a text of 3 tokens; this text has 2");
  EXPECT_EQ(message([&] { DivergenceMeter(path, 3, {1, 2, 0}, {1, 2}); }),
            path + ": saved for other token ids (position 2: 3, here 0): another text or tokenizer");
  EXPECT_EQ(message([&] { DivergenceMeter(path, 3, {1, 2, 3}, {2}); }),
            path + ": saved for other positions (2 positions from 1 to 2; this run scores 1 positions from 2 to 2): another "
                   "--context, --stride or --chunks");
  // 32 header bytes, 3 token ids, 2 positions, 2 rows of 3 floats: 84.
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  EXPECT_NE(message([&] { DivergenceMeter(path, 3, {1, 2, 3}, {1, 2}); }).find(path + ": is 80 bytes; its header implies 84 (truncated?)"),
            std::string::npos);
  test::write_file(path, "not a logprob file at all, but long enough");
  EXPECT_EQ(message([&] { DivergenceMeter(path, 3, {1, 2, 3}, {1, 2}); }), path + ": not a file written by layerwise perplexity --save-logprobs");
}

TEST(Divergence, PerplexityComparesTwoRunsOfOneText) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 12; i++) text += "Once upon a time, a little girl named Lily went to the park with her mom. ";
  test::write_file(dir / "text.txt", text);
  const std::string base = dir / "base.lp";
  auto result = test::layerwise({"perplexity", "--model", test::stories_path(), "--text", dir / "text.txt", "--context", "64",
                                 "--save-logprobs", base, "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto saved = nlohmann::json::parse(result.out);
  // Same model, same windows: the same distributions.
  result = test::layerwise({"perplexity", "--model", test::stories_path(), "--text", dir / "text.txt", "--context", "64",
                            "--kl-divergence", base, "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto json = nlohmann::json::parse(result.out);
  EXPECT_EQ(json["kl_divergence"]["mean"].get<double>(), 0.0);
  EXPECT_EQ(json["kl_divergence"]["same_top_token"].get<double>(), 1.0);
  EXPECT_EQ(json["kl_divergence"]["tokens"], saved["tokens_scored"]);
  EXPECT_EQ(json["perplexity"], saved["perplexity"]);
  // Shorter windows see less context: the distributions move, and the divergence says so.
  result = test::layerwise({"perplexity", "--model", test::stories_path(), "--text", dir / "text.txt", "--context", "16",
                            "--kl-divergence", base, "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  json = nlohmann::json::parse(result.out);
  EXPECT_GT(json["kl_divergence"]["mean"].get<double>(), 1e-3);
  EXPECT_LT(json["kl_divergence"]["same_top_token"].get<double>(), 1.0);
  // --chunks saves and compares the chunks' positions only (4 chunks of 64 here, 31 tokens each);
  // a file saved in one mode is refused by a run in the other.
  const std::string chunk_base = dir / "chunks.lp";
  result = test::layerwise({"perplexity", "--model", test::stories_path(), "--text", dir / "text.txt", "--context", "64",
                            "--chunks", "--save-logprobs", chunk_base, "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto chunk_saved = nlohmann::json::parse(result.out);
  EXPECT_EQ(chunk_saved["tokens_scored"], 124);
  result = test::layerwise({"perplexity", "--model", test::stories_path(), "--text", dir / "text.txt", "--context", "64",
                            "--chunks", "--kl-divergence", chunk_base, "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  json = nlohmann::json::parse(result.out);
  EXPECT_EQ(json["kl_divergence"]["mean"].get<double>(), 0.0);
  EXPECT_EQ(json["kl_divergence"]["tokens"], 124);
  EXPECT_EQ(json["perplexity"], chunk_saved["perplexity"]);
  result = test::layerwise({"perplexity", "--model", test::stories_path(), "--text", dir / "text.txt", "--context", "64",
                            "--kl-divergence", chunk_base, "--quiet"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("layerwise: error: " + chunk_base + ": saved for other positions (124 positions from 33 to 255; "),
            std::string::npos)
      << result.err;
  // Another text: refused, naming the file.
  test::write_file(dir / "other.txt", "A different story entirely.");
  result = test::layerwise({"perplexity", "--model", test::stories_path(), "--text", dir / "other.txt", "--kl-divergence", base});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("layerwise: error: " + base + ": saved for a text of"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace lw
