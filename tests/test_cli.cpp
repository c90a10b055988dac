// The CLI as a user runs it: bad input gets a message naming the file and a non-zero exit,
// split writes atomically and resumes, and a streamed run stays inside its memory budget.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "format/manifest.h"
#include "helpers.h"

namespace lw {
namespace {

using test::layerwise;

// Copies a fixture into a temporary directory so a test can damage it.
std::string damaged_copy(const test::TempDir& dir, const std::string& fixture_name) {
  const std::string path = dir / "model";
  test::copy_dir(test::fixture(fixture_name), path);
  return path;
}

// The number that follows `label` in `text` (a statistics line or message on stderr); NaN when
// the label is absent. (Plain parsing: GCC 12 warns inside std::regex under the sanitizers.)
double number_after(const std::string& text, const std::string& label) {
  const size_t at = text.find(label);
  return at == std::string::npos ? std::nan("") : std::strtod(text.c_str() + at + label.size(), nullptr);
}

void expect_failure(const test::RunResult& result, const std::string& needle) {
  EXPECT_NE(result.exit_code, 0);
  EXPECT_EQ(result.exit_code < 128, true) << "crashed: " << result.err;
  EXPECT_NE(result.err.find(needle), std::string::npos) << "stderr was: " << result.err;
  EXPECT_TRUE(result.out.empty()) << "nothing should reach stdout: " << result.out;
}

TEST(Cli, GeneratesTheReferenceIdsAndReportsStatistics) {
  auto result = layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1", "--max-new-tokens", "20", "--output-ids"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto reference = test::load_json(test::stories_path() + "/reference/greedy.json")[0]["generated_ids"].get<std::vector<int>>();
  reference.resize(20);
  EXPECT_EQ(test::parse_ids(result.out), reference);
  for (const char* line : {"prefill", "decode", "layer loads", "peak RSS"})
    EXPECT_NE(result.err.find(line), std::string::npos) << line;
}

TEST(Cli, BenchMeasuresPrefillAndDecodeAndCountsTheirWork) {
  auto result = layerwise({"bench", "--model", test::stories_path(), "--prompt", "40", "--decode", "8", "--repeat", "2", "--json", "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(result.err.empty()) << result.err;
  const auto report = nlohmann::json::parse(result.out);
  // stories260K (F32, tied head): 5 layers of norms + q, k, v, o (64x64, 32x64 twice, 64x64) +
  // gate, up, down (172x64 each) = 45440 floats, and the head: final norm + the 512x64 table.
  EXPECT_EQ(report["weight_bytes_per_token"], (5 * 45440 + 64 + 512 * 64) * 4);
  ASSERT_EQ(report["tests"].size(), 2u);
  const double layer_flops = 2.0 * 5 * 45312, head_flops = 2.0 * 512 * 64;
  for (const auto& test : report["tests"]) {
    const bool prompt = test["test"] == "pp40";
    EXPECT_TRUE(prompt || test["test"] == "tg8") << test.dump();
    const int tokens = test["tokens"];
    EXPECT_EQ(tokens, prompt ? 40 : 8);
    const auto seconds = test["seconds"].get<std::vector<double>>();
    ASSERT_EQ(seconds.size(), 2u);
    double mean_seconds = 0, mean_rate = 0;
    for (double s : seconds) {
      EXPECT_GT(s, 0);
      mean_seconds += s / 2, mean_rate += tokens / s / 2;
    }
    EXPECT_NEAR(test["tokens_per_second"].get<double>(), mean_rate, 1e-9 * mean_rate);
    // Work: the layers for every token, the head for the last prefill token or every decode
    // step, attention of token p over positions 0..p (q_dim 64).
    const double flops = layer_flops * tokens + head_flops * (prompt ? 1 : tokens) + 4.0 * 5 * 64 * tokens * (tokens + 1) / 2;
    EXPECT_NEAR(test["flops_per_second"].get<double>() * mean_seconds, flops, 1e-9 * flops);
    if (!prompt) {
      EXPECT_NEAR(test["weight_bytes_per_second"].get<double>(), mean_rate * report["weight_bytes_per_token"].get<double>(), 1);
    }
  }
  expect_failure(layerwise({"bench", "--model", test::stories_path(), "--prompt", "600"}), "exceed the model's 512 positions");
  expect_failure(layerwise({"bench", "--model", test::stories_path(), "--prompt", "0", "--decode", "0"}), "nothing to measure");
}

TEST(Cli, BatchFileGivesOneLinePerPromptInOneSweepPerStep) {
  test::TempDir dir;
  auto reference = test::load_json(test::stories_path() + "/reference/greedy.json");
  std::string lines;
  for (int i = 1; i <= 3; i++) {
    for (int id : reference[static_cast<size_t>(i)]["prompt_ids"].get<std::vector<int>>()) lines += std::to_string(id) + " ";
    lines += "\n";
  }
  test::write_file(dir / "batch.txt", lines);
  auto result = layerwise({"generate", "--model", test::stories_path(), "--batch-file", dir / "batch.txt", "--max-new-tokens",
                           "12", "--ignore-eos", "--output-ids"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::istringstream out(result.out);
  std::string line;
  for (int i = 1; i <= 3; i++) {
    ASSERT_TRUE(std::getline(out, line));
    auto expected = reference[static_cast<size_t>(i)]["generated_ids"].get<std::vector<int>>();
    expected.resize(12);
    EXPECT_EQ(test::parse_ids(line), expected) << "prompt " << i;
  }
  // One prefill sweep for all three prompts, then one sweep per step for the whole batch.
  EXPECT_NE(result.err.find("sweeps    12 in "), std::string::npos) << result.err;
}

TEST(Cli, RefusesBadFlagsAndArguments) {
  expect_failure(layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1", "--no-such-flag"}), "no-such-flag");
  expect_failure(layerwise({"generate", "--prompt-ids", "1"}), "--model");
  expect_failure(layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1 x 3"}), "'x' is not a token id");
  expect_failure(layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1 9999"}), "outside the vocabulary");
  expect_failure(layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1", "--max-memory", "lots"}),
                 "'lots' is not a size");
  expect_failure(layerwise({"frobnicate"}), "frobnicate");
  expect_failure(layerwise({"generate", "--model", "/nonexistent/model", "--prompt-ids", "1"}), "/nonexistent/model: no such file");
  EXPECT_EQ(layerwise({"generate", "--help"}).exit_code, 0);
  EXPECT_EQ(layerwise({"split", "--help"}).exit_code, 0);
  EXPECT_EQ(layerwise({"info", "--help"}).exit_code, 0);
}

TEST(Cli, RefusesABudgetTooSmallAndSaysTheMinimum) {
  auto result = layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1", "--max-memory", "1MiB"});
  expect_failure(result, "is too small: this run needs at least");
  result = layerwise({"info", "--model", test::stories_path(), "--max-memory", "2MiB"});
  expect_failure(result, "is too small");
}

TEST(Cli, StreamsStories260KAtTheMinimumBudgetAndReReadsEveryLayer) {
  // The budget counts the process itself (code, libraries, heap), which varies by up to about
  // 0.2 MiB between runs, more than a layer (177.5 KiB). So: start below the minimum, take the
  // minimum the refusal states, and step down while a layer still stays resident.
  std::string budget = "1MiB";
  test::RunResult result;
  for (int attempt = 0; attempt < 8; attempt++) {
    result = layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1", "--max-new-tokens", "50",
                        "--max-memory", budget, "--ignore-eos", "--output-ids"});
    if (result.exit_code == 0 && result.err.find("(0 of 6 layers resident)") != std::string::npos)
      break;
    if (result.exit_code != 0) {
      const double minimum_mib = number_after(result.err, "needs at least ");
      ASSERT_FALSE(std::isnan(minimum_mib)) << result.err;
      budget = std::to_string(static_cast<int>(minimum_mib * 1024 + 50)) + "KiB";
    } else {
      budget = std::to_string(std::stoi(budget) - 100) + "KiB";  // a layer stayed resident: less
    }
  }
  ASSERT_EQ(result.exit_code, 0) << result.err;
  ASSERT_NE(result.err.find("(0 of 6 layers resident)"), std::string::npos) << result.err;
  auto reference = test::load_json(test::stories_path() + "/reference/greedy.json")[0]["generated_ids"].get<std::vector<int>>();
  reference.resize(50);
  EXPECT_EQ(test::parse_ids(result.out), reference);
  EXPECT_EQ(number_after(result.err, "\nsweeps    "), 50) << result.err;
  const double loads = number_after(result.err, "; layer loads ");
  EXPECT_GE(loads, 50 * 6) << "5 layers and the head, every sweep";
  EXPECT_LE(loads, 51 * 6);
  EXPECT_NE(result.err.find("\nbound     by "), std::string::npos) << result.err;
}

TEST(Cli, BadCheckpointsGetAClearMessage) {
  struct Case {
    const char* what;
    std::function<void(const std::string&)> damage;
    std::string needle;
  };
  auto rewrite_header = [](const std::string& path, const std::function<void(nlohmann::json&)>& edit) {
    std::string bytes = test::read_file(path);
    uint64_t length = 0;
    for (int i = 7; i >= 0; i--) length = length << 8 | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
    nlohmann::json header = nlohmann::json::parse(bytes.substr(8, length));
    edit(header);
    std::string text = header.dump();
    text.resize(length, ' ');  // same length, so the data section does not move
    bytes.replace(8, length, text);
    test::write_file(path, bytes);
  };
  const std::vector<Case> cases = {
      {"truncated file", [](const std::string& m) { std::filesystem::resize_file(m + "/model.safetensors", 10000); },
       "past the end of the data"},
      {"header length past the end",
       [](const std::string& m) {
         std::string bytes = test::read_file(m + "/model.safetensors");
         bytes[2] = '\x7f';
         test::write_file(m + "/model.safetensors", bytes);
       },
       "model.safetensors: safetensors header length"},
      {"offsets out of range",
       [&](const std::string& m) {
         rewrite_header(m + "/model.safetensors", [](nlohmann::json& h) {
           h["model.norm.weight"]["data_offsets"] = {99999999, 99999999 + 128};
         });
       },
       "past the end of the data"},
      {"overlapping tensors",
       [&](const std::string& m) {
         rewrite_header(m + "/model.safetensors", [](nlohmann::json& h) {
           const uint64_t start = h["model.embed_tokens.weight"]["data_offsets"][0].get<uint64_t>();
           h["model.norm.weight"]["data_offsets"] = {start, start + 128};  // inside the embedding
         });
       },
       "overlap"},
      {"shape that does not match the config",
       [](const std::string& m) {
         auto config = test::load_json(m + "/config.json");
         config["intermediate_size"] = 100;
         test::write_file(m + "/config.json", config.dump());
       },
       "has shape [64, 32] but config.json implies [100, 32]"},
      {"dtype that is not a float type",
       [&](const std::string& m) {
         rewrite_header(m + "/model.safetensors", [](nlohmann::json& h) { h["model.norm.weight"]["dtype"] = "I32"; });
       },
       "has dtype I32"},
      {"missing tensor",
       [&](const std::string& m) {
         rewrite_header(m + "/model.safetensors", [](nlohmann::json& h) {
           h["model.norm.weightX"] = h["model.norm.weight"];
           h.erase("model.norm.weight");
         });
       },
       "missing tensor 'model.norm.weight'"},
      {"malformed config.json", [](const std::string& m) { test::write_file(m + "/config.json", "{\"vocab_size\": 12,"); },
       "config.json: not valid JSON"},
      {"missing config.json", [](const std::string& m) { std::filesystem::remove(m + "/config.json"); }, "no config.json"},
      {"unsupported architecture",
       [](const std::string& m) {
         auto config = test::load_json(m + "/config.json");
         config["architectures"] = {"GPT2LMHeadModel"};
         test::write_file(m + "/config.json", config.dump());
       },
       "unsupported architecture 'GPT2LMHeadModel'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    test::TempDir dir;
    const std::string model = damaged_copy(dir, "mha-f32");
    c.damage(model);
    expect_failure(layerwise({"generate", "--model", model, "--prompt-ids", "1 2 3", "--max-new-tokens", "2"}), c.needle);
    // split refuses too, and leaves no output that looks complete.
    auto split = layerwise({"split", "--model", model, "--out", dir / "out", "--quiet"});
    EXPECT_NE(split.exit_code, 0);
    EXPECT_FALSE(std::filesystem::exists(dir / "out/manifest.json"));
  }
}

TEST(Cli, SplitIsAtomicResumesAndVerifies) {
  test::TempDir dir;
  const std::string out = dir / "split";
  auto first = layerwise({"split", "--model", test::fixture("sharded-f32"), "--out", out, "--dtype", "f16"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_NE(first.err.find("5 unit files written"), std::string::npos) << first.err;
  auto manifest = parse_manifest(test::read_file(out + "/manifest.json"), "manifest.json");
  ASSERT_EQ(manifest.units.size(), 5u);
  EXPECT_EQ(manifest.dtype, "f16");
  EXPECT_EQ(layerwise({"split", "--verify", "--out", out, "--quiet"}).exit_code, 0);

  // An interrupted split (killed after two unit files, with a third cut off mid-write) resumes:
  // complete units are kept, the rest written, and the result is byte-identical.
  const std::string again = dir / "again";
  setenv("LAYERWISE_TEST_SPLIT_KILL_AFTER", "2", 1);
  auto killed = layerwise({"split", "--model", test::fixture("sharded-f32"), "--out", again, "--dtype", "f16", "--quiet"});
  unsetenv("LAYERWISE_TEST_SPLIT_KILL_AFTER");
  EXPECT_NE(killed.exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(again + "/manifest.json"));
  EXPECT_TRUE(std::filesystem::exists(again + "/layer-000.safetensors"));
  test::write_file(again + "/layer-001.safetensors.tmp", "half a file");
  expect_failure(layerwise({"generate", "--model", again, "--prompt-ids", "1 2"}), "no config.json");  // not runnable yet
  auto resumed = layerwise({"split", "--model", test::fixture("sharded-f32"), "--out", again, "--dtype", "f16", "--verify"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("3 unit files written"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.err.find("2 kept from an interrupted run"), std::string::npos) << resumed.err;
  EXPECT_FALSE(std::filesystem::exists(again + "/layer-001.safetensors.tmp"));
  EXPECT_FALSE(std::filesystem::exists(again + "/split-progress.json"));
  auto resumed_manifest = parse_manifest(test::read_file(again + "/manifest.json"), "manifest.json");
  for (size_t u = 0; u < manifest.units.size(); u++)
    EXPECT_EQ(resumed_manifest.units[u].xxh3, manifest.units[u].xxh3) << "unit " << u;

  // Corruption is found by --verify and named.
  std::string bytes = test::read_file(out + "/layer-000.safetensors");
  bytes[bytes.size() - 1] ^= 1;
  test::write_file(out + "/layer-000.safetensors", bytes);
  auto verify = layerwise({"split", "--verify", "--out", out});
  expect_failure(verify, "layer-000.safetensors: checksum");
}

TEST(Cli, SplitRefusesADirectoryWithForeignFiles) {
  test::TempDir dir;
  std::filesystem::create_directories(dir / "out");
  test::write_file(dir / "out/notes.txt", "mine");
  auto result = layerwise({"split", "--model", test::fixture("mha-f32"), "--out", dir / "out"});
  expect_failure(result, "holds 'notes.txt'");
  EXPECT_EQ(test::read_file(dir / "out/notes.txt"), "mine");
}

TEST(Cli, InfoShowsArchitectureUnitsAndPlan) {
  auto result = layerwise({"info", "--model", test::fixture("mqa-headdim-linear-bias-f32"), "--max-memory", "64MiB"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  for (const char* needle : {"3 layers, hidden 32, heads 4 (kv 1, head_dim 16)", "scaling linear (factor 2)", "layer.2",
                             "resident units      4 of 4"})
    EXPECT_NE(result.out.find(needle), std::string::npos) << needle << " in\n" << result.out;
}

// A generated checkpoint of a few hundred MB streamed at a budget far below its size: the
// kernel's measure of the process's peak resident memory stays under the budget.
TEST(Cli, StreamedRunStaysWithinItsBudget) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's shadow memory and quarantine count as resident memory; this "
                  "measurement runs in the release build of the suite";
#endif
  test::TempDir dir;
  auto made = test::run({LW_MAKE_CHECKPOINT, "--shape", "small", "--out", dir / "hf", "--quiet"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const uint64_t model_bytes = std::filesystem::file_size(dir / "hf/model.safetensors");
  EXPECT_GT(model_bytes, 200ull << 20);
  const long budget_kib = 64 * 1024;
  auto result = layerwise({"generate", "--model", dir / "hf", "--prompt-ids", "1 5 9 200 7", "--max-new-tokens", "4",
                           "--max-memory", "64MiB", "--ignore-eos"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(test::parse_ids(result.out).size(), 4u);
  EXPECT_LT(result.peak_rss_kib, budget_kib) << result.err;
  EXPECT_GT(number_after(result.err, "layer loads "), 17) << "layers must have been re-read: " << result.err;
}

}  // namespace
}  // namespace lw
