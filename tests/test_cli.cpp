// The CLI as a user runs it: bad input gets a message naming the file and a non-zero exit,
// split writes atomically and resumes, and a streamed run stays inside its memory budget.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <sstream>

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

// Runs `args` with the least --max-memory the engine accepts plus `slack_kib`: the budget counts
// the process itself, which varies by up to about 0.2 MiB between runs, so a run refused at one
// minimum is retried at the minimum it states.
test::RunResult run_near_minimum(std::vector<std::string> args, int slack_kib) {
  args.insert(args.end(), {"--max-memory", "1MiB"});
  test::RunResult result;
  for (int attempt = 0; attempt < 4; attempt++) {
    result = test::layerwise(args);
    const double minimum_mib = number_after(result.err, "needs at least ");
    if (result.exit_code == 0 || std::isnan(minimum_mib)) break;
    args.back() = std::to_string(static_cast<int>(minimum_mib * 1024) + slack_kib) + "KiB";
  }
  return result;
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
  expect_failure(layerwise({"bench", "--model", test::stories_path(), "--prompt", "600"}),
                 "need 600 positions, but the model is made for 512");
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
  expect_failure(layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1 9999"}),
                 "the prompt: token id 9999 is outside the model's vocabulary (0..511)");
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
  // The least budget plus 50 KiB, less than a layer (177.5 KiB): nothing should stay resident.
  // Should the process have shrunk since the minimum was stated, a layer may: step down.
  const std::vector<std::string> args = {"generate", "--model", test::stories_path(), "--prompt-ids", "1", "--max-new-tokens",
                                         "50", "--ignore-eos", "--output-ids"};
  test::RunResult result = run_near_minimum(args, 50);
  for (int attempt = 0; attempt < 4 && result.exit_code == 0 && result.err.find("(0 of 6 layers resident)") == std::string::npos;
       attempt++) {
    const double budget_mib = number_after(result.err, "memory    budget ");
    std::vector<std::string> lower = args;
    lower.insert(lower.end(), {"--max-memory", std::to_string(static_cast<int>(budget_mib * 1024) - 100) + "KiB"});
    result = layerwise(lower);
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
  expect_failure(layerwise({"generate", "--model", again, "--prompt-ids", "1 2"}), "an interrupted split");  // not runnable yet
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
                             "resident units      4 of 4", "reads               through the page cache (",
                             "fit in the page cache beside the budget", "(nothing streamed)"})
    EXPECT_NE(result.out.find(needle), std::string::npos) << needle << " in\n" << result.out;
  // Streamed, read around the page cache: the prediction is the longer of reading and computing.
  result = run_near_minimum({"info", "--model", test::stories_path(), "--io", "direct", "--context", "8"}, 50);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("reads               direct, around the page cache (--io direct)"), std::string::npos) << result.out;
  const double read = number_after(result.out, "predicted: reading "), compute = number_after(result.out, " s, computing ");
  EXPECT_GT(read, 0) << result.out;
  // Two buffers overlap reading and computing; one (the least budget may allow no more) does not.
  // The figures are printed to the millisecond, each rounded on its own.
  const bool overlapped = number_after(result.out, "streaming buffers   ") >= 2;
  EXPECT_NEAR(number_after(result.out, "decode sweep        "), overlapped ? std::max(read, compute) : read + compute, 0.0015)
      << result.out;
  result = layerwise({"info", "--model", test::stories_path(), "--no-measure"});
  EXPECT_EQ(result.out.find("predicted"), std::string::npos) << result.out;
  expect_failure(layerwise({"info", "--model", test::stories_path(), "--io", "sideways"}), "--io");
}

TEST(Cli, ProfilePrintsALinePerSweepAndPerLayer) {
  auto result = layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1 5 9", "--max-new-tokens", "6",
                           "--ignore-eos", "--output-ids", "--profile"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  int sweep_lines = 0, layer_lines = 0;
  std::istringstream err(result.err);
  for (std::string line; std::getline(err, line);) {
    if (line.rfind("profile ", 0) != 0 || line.find("seconds") != std::string::npos || line.find("loads") != std::string::npos)
      continue;
    (line.find("layer.") != std::string::npos || line.find(" head ") != std::string::npos ? layer_lines : sweep_lines)++;
  }
  EXPECT_EQ(sweep_lines, 6) << result.err;  // one prefill sweep, five decode sweeps
  EXPECT_EQ(layer_lines, 6) << result.err;  // five layers and the head
  EXPECT_NE(result.err.find("per sweep 5 decode sweeps (1 tokens each)"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("bound     by computing: every layer is resident"), std::string::npos) << result.err;
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
  std::vector<int> first_ids;
  for (const char* io : {"direct", "cached"}) {
    auto result = layerwise({"generate", "--model", dir / "hf", "--prompt-ids", "1 5 9 200 7", "--max-new-tokens", "4",
                             "--max-memory", "64MiB", "--ignore-eos", "--io", io});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    const auto ids = test::parse_ids(result.out);
    EXPECT_EQ(ids.size(), 4u);
    if (first_ids.empty()) first_ids = ids;
    EXPECT_EQ(ids, first_ids) << "reading " << io;
    EXPECT_LT(result.peak_rss_kib, budget_kib) << result.err;
    EXPECT_GT(number_after(result.err, "layer loads "), 17) << "layers must have been re-read: " << result.err;
    EXPECT_NE(result.err.find(std::string("\nreads     ") + (io == std::string("direct") ? "direct" : "through the page cache")),
              std::string::npos) << result.err;
  }
  // Splitting reads and writes in chunks: a few MiB whatever the model's size.
  auto split = layerwise({"split", "--model", dir / "hf", "--out", dir / "split", "--quiet"});
  ASSERT_EQ(split.exit_code, 0) << split.err;
  EXPECT_LT(split.peak_rss_kib, budget_kib) << "split of a " << model_bytes << "-byte model";
}

}  // namespace
}  // namespace lw
