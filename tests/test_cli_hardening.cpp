// What a hostile run found (issue 12), one regression test per finding: numbers that are not
// numbers, input past the model's context, threads beyond the cores, sizes past 2^64, messages
// that named the wrong file or the wrong problem, exit codes, prompts numbered by line, empty
// chat turns and a score output left behind by a signal.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "common/error.h"
#include "common/sizes.h"
#include "common/system.h"
#include "helpers.h"
#include "model/config.h"
#include "plan/plan.h"
#include "sample/sampler.h"

namespace lw {
namespace {

using test::layerwise;

void expect_refused(const test::RunResult& result, int exit_code, const std::string& message) {
  EXPECT_EQ(result.exit_code, exit_code) << result.err;
  EXPECT_NE(result.err.find(message), std::string::npos) << "stderr was: " << result.err;
  EXPECT_EQ(result.out, "");
}

std::vector<std::string> generate_ids(std::vector<std::string> extra) {
  std::vector<std::string> args = {"generate", "--model", test::stories_path(), "--prompt-ids", "1", "--max-new-tokens", "4"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Items 4 and 10: NaN passed every range check (it compares false); each numeric option now says
// what it wants and what it got, exit 2.
TEST(Hardening, NumbersOnTheCommandLineAreFiniteAndInRange) {
  expect_refused(layerwise(generate_ids({"--temperature", "nan"})), 2, "--temperature: must be a number of 0 or more (got 'nan')");
  expect_refused(layerwise(generate_ids({"--top-p", "nan"})), 2, "--top-p: must be a number from 0 to 1 (got 'nan')");
  expect_refused(layerwise(generate_ids({"--top-p", "1.5"})), 2, "--top-p: must be a number from 0 to 1 (got '1.5')");
  expect_refused(layerwise(generate_ids({"--repeat-penalty", "inf"})), 2, "--repeat-penalty: must be a positive number (got 'inf')");
  expect_refused(layerwise(generate_ids({"--max-new-tokens", "abc"})), 2, "--max-new-tokens: must be a whole number (0 or more) (got 'abc')");
  expect_refused(layerwise(generate_ids({"--max-new-tokens", "-1"})), 2, "--max-new-tokens: must be a whole number (0 or more) (got '-1')");
  expect_refused(layerwise(generate_ids({"--max-new-tokens", "99999999999"})), 2, "--max-new-tokens: must be at most 2147483647");
  expect_refused(layerwise(generate_ids({"--top-k", "2.5"})), 2, "--top-k: must be a whole number (0 or more) (got '2.5')");
  expect_refused(layerwise(generate_ids({"--seed", "-7"})), 2, "--seed: must be a whole number (0 or more) (got '-7')");
  expect_refused(layerwise(generate_ids({"--threads", "0"})), 2, "--threads: must be a positive integer (got '0')");
  expect_refused(layerwise({"perplexity", "--model", test::stories_path(), "--text", "x", "--stride", "0"}), 2,
                 "--stride: must be a positive integer (got '0')");
  expect_refused(layerwise({"perplexity", "--model", test::stories_path(), "--text", "x", "--context", "1"}), 2,
                 "--context: must be an integer of at least 2 (got '1')");
  expect_refused(layerwise({"info", "--model", test::stories_path(), "--batch", "1e3"}), 2, "--batch: must be a positive integer (got '1e3')");
  expect_refused(layerwise({"bench", "--model", test::stories_path(), "--repeat", "0"}), 2, "--repeat: must be a positive integer (got '0')");
  // The engine's own check, for callers that are not the CLI.
  for (const SamplingOptions& options : {SamplingOptions{NAN, 0, 1, 1, 0}, SamplingOptions{1, 0, NAN, 1, 0},
                                         SamplingOptions{1, 0, 1, NAN, 0}, SamplingOptions{INFINITY, 0, 1, 1, 0}})
    EXPECT_THROW(Sampler sampler(options), Error);
  EXPECT_NO_THROW(Sampler sampler({0.7f, 40, 0.9f, 1.1f, 3}));
}

// Item 4: an infinite rope_theta (as a GGUF file's metadata becomes a configuration) is refused
// like 0 and negative values. (GGUF metadata itself: Gguf.HostileFilesGetAClearMessage...)
TEST(Hardening, ConfigNumbersMustBeFinite) {
  nlohmann::json config = test::load_json(test::stories_path() + "/config.json");
  config["rope_theta"] = INFINITY;
  try {
    parse_model_config(config, nullptr, "config.json");
    FAIL() << "rope_theta inf was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: \"rope_theta\" must be a positive finite number"), std::string::npos) << e.what();
  }
}

// Item 5: one rule for every command — past the positions the model is made for, refused before
// computing with the numbers, unless --allow-long-context.
TEST(Hardening, InputPastTheContextIsRefusedUnlessAllowed) {
  std::string ids = "1";
  for (int i = 1; i < 500; i++) ids += " 1";
  const std::string made_for = "but the model is made for 512 (max_position_embeddings 512)";
  expect_refused(layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", ids, "--max-new-tokens", "100"}), 1,
                 "the prompt (500 tokens) and --max-new-tokens 100 need 600 positions, " + made_for);
  const auto allowed = layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", ids, "--max-new-tokens", "100",
                                  "--ignore-eos", "--output-ids", "--quiet", "--allow-long-context"});
  EXPECT_EQ(allowed.exit_code, 0) << allowed.err;
  EXPECT_EQ(test::parse_ids(allowed.out).size(), 100u);
  const auto fits = layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", ids, "--max-new-tokens", "12", "--quiet"});
  EXPECT_EQ(fits.exit_code, 0) << fits.err;

  test::TempDir dir;
  test::write_file(dir / "batch.txt", "1 2 3\n" + ids + "\n");
  expect_refused(layerwise({"generate", "--model", test::stories_path(), "--batch-file", dir / "batch.txt", "--max-new-tokens", "100"}),
                 1, dir / "batch.txt" + ":2: the prompt (500 tokens) and --max-new-tokens 100 need 600 positions");
  test::write_file(dir / "text.txt", "Once upon a time");
  expect_refused(layerwise({"perplexity", "--model", test::stories_path(), "--text", dir / "text.txt", "--context", "100000"}), 1,
                 "windows of --context 100000 tokens need 100000 positions, " + made_for);
  expect_refused(layerwise({"bench", "--model", test::stories_path(), "--prompt", "100000"}), 1,
                 "--prompt 100000 and --decode 128 need 100000 positions, " + made_for);
  expect_refused(layerwise({"info", "--model", test::stories_path(), "--context", "513", "--no-measure"}), 1,
                 "--context 513 tokens need 513 positions");
  // (score: ScoreCli.RowsTheModelCannotRunAreReportedInTheirPlaceAndTheOthersScored)

  // Rope scaling that stretches the model stretches the limit; llama3 states it already.
  nlohmann::json config = test::load_json(test::stories_path() + "/config.json");
  EXPECT_EQ(context_limit(parse_model_config(config, nullptr, "config.json")), 512);
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  EXPECT_EQ(context_limit(parse_model_config(config, nullptr, "config.json")), 2048);
  config["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  EXPECT_EQ(context_limit(parse_model_config(config, nullptr, "config.json")), 1024);
  config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 64}};
  EXPECT_EQ(context_limit(parse_model_config(config, nullptr, "config.json")), 512);
}

// Item 7: more threads than cores only made the workers spin against each other (17.5 s for a
// token that takes 0.1 s): the CLI uses the cores there are and says so.
TEST(Hardening, ThreadsAboveTheCoreCountAreCappedWithAWarning) {
  const int cores = usable_cores();
  const auto result = layerwise(generate_ids({"--threads", "1000", "--ignore-eos", "--output-ids"}));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(test::parse_ids(result.out).size(), 4u);
  EXPECT_NE(result.err.find("--threads 1000 is more than the " + std::to_string(cores) + " cores this process may use; using " +
                            std::to_string(cores)),
            std::string::npos)
      << result.err;
  EXPECT_NE(result.err.find(", " + std::to_string(cores) + " threads"), std::string::npos) << result.err;
}

// Item 8: sizes saturate instead of wrapping; the message states the true total.
TEST(Hardening, PlanSizesDoNotOverflow) {
  EXPECT_EQ(size_add(kSizeOverflow - 1, 2), kSizeOverflow);
  EXPECT_EQ(size_mul(uint64_t{1} << 40, uint64_t{1} << 30), kSizeOverflow);
  EXPECT_EQ(size_mul(3, 5), 15u);
  EXPECT_EQ(format_size(kSizeOverflow), "over 16 EiB (2^64 bytes)");
  EXPECT_EQ(format_size(uint64_t{3} << 50), "3.00 PiB");

  // stories260K: 5 layers x (keys + values) x 32 floats per position; 10^8 sequences x 512.
  const auto result = layerwise({"info", "--model", test::stories_path(), "--batch", "100000000", "--no-measure"});
  EXPECT_EQ(result.exit_code, 1);
  const uint64_t kv = 5ull * 2 * 32 * 4 * 100000000ull * 512;
  EXPECT_NE(result.err.find("KV cache " + format_size(kv)), std::string::npos) << result.err;
  EXPECT_EQ(format_size(kv), "59.60 TiB");
  const size_t at = result.err.find("needs at least ");
  ASSERT_NE(at, std::string::npos) << result.err;
  EXPECT_GE(std::strtod(result.err.c_str() + at + 15, nullptr), 59.60) << result.err;
  EXPECT_NE(result.err.find("TiB (the largest layer"), std::string::npos) << result.err;

  ModelConfig config = parse_model_config(test::load_json(test::stories_path() + "/config.json"), nullptr, "config.json");
  config.num_layers = 1 << 30;
  config.num_kv_heads = config.num_heads = 1 << 20;
  PlanRequest request;
  request.budget_bytes = 1ull << 40;
  request.sequences = 1 << 30;
  request.context_tokens = 1 << 30;
  try {
    plan_memory(config, {0, 1000}, request);
    FAIL() << "an impossible plan was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs at least over 16 EiB (2^64 bytes)"), std::string::npos) << e.what();
  }
}

// Item 9: a bad eos_token_id is reported against the file that holds it.
TEST(Hardening, GenerationConfigProblemsNameThatFile) {
  test::TempDir dir;
  const std::string model = dir / "model";
  test::copy_dir(test::stories_path(), model);
  test::write_file(model + "/generation_config.json", R"({"eos_token_id": 9999})");
  expect_refused(layerwise({"generate", "--model", model, "--prompt-ids", "1"}), 1,
                 model + "/generation_config.json: eos_token_id 9999 is outside the vocabulary (0..511)");
  test::write_file(model + "/generation_config.json", R"({"eos_token_id": "two"})");
  expect_refused(layerwise({"generate", "--model", model, "--prompt-ids", "1"}), 1, model + "/generation_config.json: \"eos_token_id\"");
}

// Item 11: bad usage exits 2, as the README says; bad input 1.
TEST(Hardening, ExitCodesSeparateBadUsageFromBadInput) {
  expect_refused(layerwise(generate_ids({"--max-memory", "lots"})), 2, "'lots' is not a size");
  expect_refused(layerwise(generate_ids({"--max-memory", "0"})), 2, "'0' is not a usable size");
  expect_refused(layerwise({"generate", "--model", test::stories_path()}), 2, "generate needs exactly one of --prompt");
  expect_refused(layerwise({"generate", "--model", test::stories_path(), "--prompt", "a", "--prompt-ids", "1"}), 2,
                 "generate needs exactly one of --prompt");
  expect_refused(layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1", "--chat"}), 2, "--chat needs a text prompt");
  expect_refused(layerwise({"tokenize", "--model", test::stories_path()}), 2, "tokenize needs a text or --file");
  expect_refused(layerwise({"info", "--model", test::stories_path(), "--max-memory", "12QB"}), 2, "unknown unit 'qb'");
  expect_refused(layerwise({"generate", "--model", "/nonexistent/model", "--prompt-ids", "1"}), 1, "/nonexistent/model: no such file");
}

// Item 12: a directory that is not a model says so before anything else is missed.
TEST(Hardening, NotAModelDirectoryIsSaidFirst) {
  test::TempDir dir;
  const std::string empty = dir / "empty";
  std::filesystem::create_directory(empty);
  for (const auto& args : {std::vector<std::string>{"generate", "--model", empty, "--prompt", "Once"},
                           std::vector<std::string>{"tokenize", "--model", empty, "Once"},
                           std::vector<std::string>{"info", "--model", empty}})
    expect_refused(layerwise(args), 1, empty + ": no config.json or manifest.json: not a model directory");
  // An interrupted split: its journal is there, its manifest is not.
  const std::string split = dir / "split";
  ASSERT_EQ(layerwise({"split", "--model", test::stories_path(), "--out", split, "--quiet"}).exit_code, 0);
  test::copy_dir(split, dir / "interrupted");
  std::filesystem::remove(dir / "interrupted/manifest.json");
  test::write_file(dir / "interrupted/split-progress.json", "{}");
  expect_refused(layerwise({"generate", "--model", dir / "interrupted", "--prompt", "Once"}), 1,
                 dir / "interrupted: an interrupted split (split-progress.json is here but no manifest.json): rerun layerwise split");
}

// Item 13: prompts are numbered by input line; a blank line is refused rather than skipped.
TEST(Hardening, PromptsFilesAreNumberedByLine) {
  test::TempDir dir;
  test::write_file(dir / "prompts.txt", "Once upon a time\n\nThere was\n");
  expect_refused(layerwise({"generate", "--model", test::stories_path(), "--prompts-file", dir / "prompts.txt"}), 1,
                 dir / "prompts.txt:2: empty line");
  test::write_file(dir / "batch.txt", "1 2\n \n");
  expect_refused(layerwise({"generate", "--model", test::stories_path(), "--batch-file", dir / "batch.txt"}), 1,
                 dir / "batch.txt:2: empty line");
  test::write_file(dir / "prompts.txt", "Once upon a time\r\nThere was\r\n");
  const auto result = layerwise({"generate", "--model", test::stories_path(), "--prompts-file", dir / "prompts.txt",
                                 "--max-new-tokens", "3", "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::istringstream out(result.out);
  std::string line;
  for (int n = 1; n <= 2; n++) {
    ASSERT_TRUE(std::getline(out, line));
    const auto json = nlohmann::json::parse(line);
    EXPECT_EQ(json["line"], n);
    EXPECT_EQ(json["prompt"], n - 1);
  }
  EXPECT_FALSE(std::getline(out, line));
}

// Item 14: an empty user turn is refused (--message "") or skipped (stdin), never answered.
TEST(Hardening, EmptyChatTurnsAreNotSent) {
  expect_refused(layerwise({"chat", "--model", test::stories_path(), "--message", ""}), 2, "--message is empty");
  expect_refused(layerwise({"chat", "--model", test::stories_path(), "--message", "  "}), 2, "--message is empty");
  expect_refused(layerwise({"chat", "--model", test::stories_path(), "--quiet"}, ""), 1, "stdin held no message");
  expect_refused(layerwise({"chat", "--model", test::stories_path(), "--quiet"}, "\n   \n\t\n"), 1, "stdin held no message");
}

// Item 15: score --output killed by SIGTERM or SIGINT leaves neither OUT nor OUT.tmp.
TEST(Hardening, ScoreOutputIsRemovedWhenASignalEndsTheRun) {
  for (int signal : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(strsignal(signal));
    test::TempDir dir;
    std::string rows;
    for (int r = 0; r < 20000; r++) rows += R"({"prefix_ids": [1, 403, 407], "choices_ids": [[1078], [262, 505]]})" "\n";
    test::write_file(dir / "rows.jsonl", rows);
    const std::string output = dir / "scores.jsonl";
    const pid_t pid = fork();
    if (pid == 0) {
      if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(127);
      execl(LW_BINARY, LW_BINARY, "score", "--model", test::stories_path().c_str(), "--input", (dir / "rows.jsonl").c_str(),
            "--output", output.c_str(), "--max-batch-rows", "1", "--quiet", static_cast<char*>(nullptr));
      _exit(127);
    }
    bool seen = false;
    for (int wait = 0; wait < 60000 && !seen; wait++) {
      seen = std::filesystem::exists(output + ".tmp");
      if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(seen) << "the temporary output never appeared";
    kill(pid, signal);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before the signal; make it longer";
    EXPECT_EQ(WTERMSIG(status), signal);
    EXPECT_FALSE(std::filesystem::exists(output + ".tmp"));
    EXPECT_FALSE(std::filesystem::exists(output));
  }
}

}  // namespace
}  // namespace lw
