// `layerwise split --quantize`: every scheme on stories260K (rows of 64: the 32-block fallbacks)
// and on a generated checkpoint with rows of 512 (real K blocks), checked by --verify, info, the
// manifest's per-tensor types, greedy generation and log-likelihoods against the float model;
// the refusals (with --dtype, of a quantized source, of an unknown type in the manifest).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/split.h"
#include "format/manifest.h"
#include "helpers.h"

namespace lw {
namespace {

using test::layerwise;

void expect_failure(const test::RunResult& result, int code, const std::string& needle) {
  EXPECT_EQ(result.exit_code, code) << result.err;
  EXPECT_NE(result.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << result.err;
}

// name -> type of every tensor the manifest lists, over all units.
std::map<std::string, std::string> manifest_types(const std::string& split) {
  const Manifest manifest = parse_manifest(test::read_file(split + "/manifest.json"), "manifest.json");
  std::map<std::string, std::string> types;
  for (const auto& unit : manifest.units)
    for (const auto& [name, type] : unit.tensors) types[name] = type;
  return types;
}

// Sum log-probabilities of a few continuations (score), one per choice, for comparing models.
std::vector<double> scores(const std::string& model, const std::string& input) {
  auto result = layerwise({"score", "--model", model, "--input", input});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::vector<double> sums;
  std::istringstream lines(result.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    const nlohmann::json row = nlohmann::json::parse(line);
    for (const auto& choice : row["choices"]) sums.push_back(choice["sum_logprob"].get<double>());
  }
  return sums;
}

std::vector<int> greedy(const std::string& model, const std::string& prompt, int tokens) {
  auto result = layerwise({"generate", "--model", model, "--prompt-ids", prompt, "--max-new-tokens", std::to_string(tokens),
                           "--ignore-eos", "--output-ids", "--temperature", "0"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  return test::parse_ids(result.out);
}

// Largest |a - b| over matching entries, divided by the number of tokens each sum covers.
double worst_per_token(const std::vector<double>& a, const std::vector<double>& b, int tokens) {
  if (a.size() != b.size() || a.empty()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); i++) worst = std::max(worst, std::abs(a[i] - b[i]) / tokens);
  return worst;
}

std::string write_score_input(const test::TempDir& dir, int vocab) {
  // Three rows of a prefix and three 4-token continuations (ids spread over the vocabulary).
  std::string text;
  for (int row = 0; row < 3; row++) {
    nlohmann::json line = {{"id", row}, {"prefix_ids", {1, 10 + row, 20 + 3 * row, 7, 99 % vocab}}};
    line["choices_ids"] = nlohmann::json::array();
    for (int c = 0; c < 3; c++)
      line["choices_ids"].push_back({(31 * c + 5 * row + 3) % vocab, (57 * c + 11) % vocab, (13 * c + row + 40) % vocab,
                                     (101 * c + 17 * row + 2) % vocab});
    text += line.dump() + "\n";
  }
  const std::string path = dir / "score.jsonl";
  test::write_file(path, text);
  return path;
}

struct SchemeCase {
  std::string scheme;
  std::vector<std::string> info_types;  // each must appear in info's weights line
  double per_token_logprob;            // largest |Δ sum_logprob| / tokens against the float model
  bool same_greedy;                    // 16 greedy tokens equal to the float model's
};

// stories260K: hidden 64, ffn 172, tied embedding. Rows of 64 take the 32-block fallbacks;
// down_proj (rows of 172) stays F32.
TEST(CliQuantize, StoriesEveryScheme) {
  test::TempDir dir;
  const std::string input = write_score_input(dir, 512);
  const auto reference = scores(test::stories_path(), input);
  const auto reference_ids = greedy(test::stories_path(), "1 403 407", 16);
  ASSERT_EQ(reference_ids.size(), 16u);
  // The continuations are arbitrary ids (log-likelihoods around -28 per token), which magnifies
  // logit errors. Measured worst |delta| per token: q8_0 0.114, q4_0 0.166, q4_k 0.175, q5_k 0.280,
  // q6_k 0.114 (Q8_0 here: rows of 64), iq4_xs 0.458, q4_k_m 0.251; tolerances about 1.4x (q8_0
  // and q6_k 1.05x). With the head in Q8_0 rather than the scheme's type q4_0, q4_k and iq4_xs
  // measured 4-5x less (0.862, 0.695, 1.098 before), q5_k more (0.198 before: errors that cancelled).
  // Every scheme keeps all 16 greedy ids of this prompt (measured; the margins allow it).
  const SchemeCase cases[] = {
      {"q8_0", {"Q8_0", "F32"}, 0.12, true},
      {"q4_0", {"Q4_0", "F32"}, 0.24, true},
      {"q4_k", {"Q5_0", "F32"}, 0.25, true},
      {"q5_k", {"Q5_1", "F32"}, 0.39, true},
      {"q6_k", {"Q8_0", "F32"}, 0.12, true},
      {"iq4_xs", {"IQ4_NL", "F32"}, 0.65, true},
      {"q4_k_m", {"Q5_0", "Q8_0", "F32"}, 0.35, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.scheme);
    const std::string out = dir / ("split-" + c.scheme);
    auto split = layerwise({"split", "--model", test::stories_path(), "--out", out, "--quantize", c.scheme, "--verify", "--quiet"});
    ASSERT_EQ(split.exit_code, 0) << split.err;
    EXPECT_NE(split.err.find("verify: 7 unit files match the manifest"), std::string::npos) << split.err;
    const auto types = manifest_types(out);
    EXPECT_EQ(types.at("model.layers.0.input_layernorm.weight"), "F32");
    EXPECT_EQ(types.at("model.layers.0.mlp.down_proj.weight"), "F32");  // rows of 172: no block type fits
    // Q6_K for the head in every scheme (Q8_0 stays Q8_0), falling back to Q8_0 on 64-element
    // rows; tied, so the embedding is treated as the head.
    EXPECT_EQ(types.at("lm_head.weight"), "Q8_0");
    EXPECT_EQ(types.at("model.embed_tokens.weight"), "Q8_0");
    if (c.scheme == "q4_k_m") {
      // use_more_bits for 5 layers: layer 2 ((2 - 0) % 3 == 2) and layer 4 (>= 7*5/8).
      EXPECT_EQ(types.at("model.layers.0.self_attn.v_proj.weight"), "Q5_0");
      EXPECT_EQ(types.at("model.layers.1.self_attn.v_proj.weight"), "Q5_0");
      EXPECT_EQ(types.at("model.layers.2.self_attn.v_proj.weight"), "Q8_0");
      EXPECT_EQ(types.at("model.layers.4.self_attn.v_proj.weight"), "Q8_0");
      EXPECT_EQ(types.at("model.layers.2.self_attn.q_proj.weight"), "Q5_0");
    }
    auto info = layerwise({"info", "--model", out, "--no-measure"});
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("layerwise split, dtype " + c.scheme), std::string::npos) << info.out;
    for (const auto& type : c.info_types) EXPECT_NE(info.out.find(type + " x"), std::string::npos) << type << "\n" << info.out;

    const auto quantized = scores(out, input);
    const double worst = worst_per_token(quantized, reference, 4);
    std::printf("  stories260K %-7s worst |delta log-likelihood| per token %.4f (tolerance %.2f)\n", c.scheme.c_str(), worst,
                c.per_token_logprob);
    std::fflush(stdout);  // before the next fork, or the child's freopen repeats the buffer
    EXPECT_LT(worst, c.per_token_logprob);
    const auto ids = greedy(out, "1 403 407", 16);
    size_t same = 0;
    while (same < ids.size() && same < reference_ids.size() && ids[same] == reference_ids[same]) same++;
    std::printf("  stories260K %-7s greedy ids equal to the float model's for the first %zu of 16\n", c.scheme.c_str(), same);
    std::fflush(stdout);
    if (c.same_greedy) {
      EXPECT_EQ(ids, reference_ids);
    }
    EXPECT_EQ(ids.size(), 16u);
  }
}

// A generated checkpoint (F16, hidden 512, ffn 1408, 2 layers, vocab 8000) has rows of 512:
// real Q4_K / Q5_K / Q6_K / IQ4_XS blocks. down_proj's rows of 1408 are not a multiple of 256 and
// take the fallbacks.
TEST(CliQuantize, GeneratedCheckpointGetsRealKBlocks) {
  test::TempDir dir;
  auto made = test::run({LW_MAKE_CHECKPOINT, "--shape", "small", "--layers", "2", "--dtype", "f16", "--out", dir / "hf", "--quiet"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string input = write_score_input(dir, 8000);
  const auto reference = scores(dir / "hf", input);
  struct Case {
    std::string scheme;
    std::map<std::string, std::string> expected;
    double per_token_logprob;
  };
  // Random weights (near-uniform next-token distributions, log-likelihoods around -9 per token).
  // Measured worst |delta| per token: q4_k_m 0.065, q5_k 0.053, q6_k 0.028, iq4_xs 0.098;
  // tolerances about 1.4x. (With the head in Q5_K / IQ4_XS rather than Q6_K: q5_k 0.039, iq4_xs
  // 0.123; q5_k's other errors cancelled the head's.)
  const Case cases[] = {
      {"q4_k_m",
       {{"lm_head.weight", "Q6_K"},
        {"model.embed_tokens.weight", "Q4_K"},
        {"model.layers.0.self_attn.v_proj.weight", "Q4_K"},  // use_more_bits(0, 2) is false
        {"model.layers.1.self_attn.v_proj.weight", "Q6_K"},  // the last eighth
        {"model.layers.0.mlp.down_proj.weight", "Q5_0"},     // Q4_K, rows of 1408
        {"model.layers.1.mlp.down_proj.weight", "Q8_0"},     // Q6_K, rows of 1408
        {"model.layers.0.mlp.up_proj.weight", "Q4_K"},
        {"model.layers.0.input_layernorm.weight", "F16"}},
       0.09},
      // Untied: the head in Q6_K as llama-quantize does, the embedding in the scheme's type.
      {"q5_k",
       {{"lm_head.weight", "Q6_K"},
        {"model.embed_tokens.weight", "Q5_K"},
        {"model.layers.0.self_attn.q_proj.weight", "Q5_K"},
        {"model.layers.0.mlp.down_proj.weight", "Q5_1"}},
       0.075},
      {"q6_k",
       {{"lm_head.weight", "Q6_K"},
        {"model.embed_tokens.weight", "Q6_K"},
        {"model.layers.1.self_attn.o_proj.weight", "Q6_K"},
        {"model.layers.1.mlp.down_proj.weight", "Q8_0"}},
       0.045},
      {"iq4_xs",
       {{"lm_head.weight", "Q6_K"},
        {"model.embed_tokens.weight", "IQ4_XS"},
        {"model.layers.0.mlp.gate_proj.weight", "IQ4_XS"},
        {"model.layers.0.mlp.down_proj.weight", "IQ4_NL"}},
       0.14},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.scheme);
    const std::string out = dir / ("split-" + c.scheme);
    auto split = layerwise({"split", "--model", dir / "hf", "--out", out, "--quantize", c.scheme, "--verify", "--quiet"});
    ASSERT_EQ(split.exit_code, 0) << split.err;
#if !defined(__SANITIZE_ADDRESS__)
    // Chunks of rows, as a plain split: measured 43 MiB for the 16-layer shape (40 MiB plain).
    EXPECT_LT(split.peak_rss_kib, 64 * 1024) << "split --quantize " << c.scheme;
#endif
    const auto types = manifest_types(out);
    for (const auto& [name, type] : c.expected) EXPECT_EQ(types.at(name), type) << name;
    auto info = layerwise({"info", "--model", out, "--no-measure"});
    ASSERT_EQ(info.exit_code, 0) << info.err;
    for (const auto& [name, type] : c.expected) EXPECT_NE(info.out.find(type + " x"), std::string::npos) << type << "\n" << info.out;
    const double worst = worst_per_token(scores(out, input), reference, 4);
    std::printf("  generated   %-7s worst |delta log-likelihood| per token %.4f (tolerance %.2f)\n", c.scheme.c_str(), worst,
                c.per_token_logprob);
    std::fflush(stdout);  // before the next fork, or the child's freopen repeats the buffer
    EXPECT_LT(worst, c.per_token_logprob);
  }
}

TEST(CliQuantize, GgufSourcesFloatYesBlocksNo) {
  test::TempDir dir;
  auto split = layerwise({"split", "--model", test::fixture("gguf_models/gqa-f16.gguf"), "--out", dir / "q8", "--quantize", "q8_0",
                          "--verify", "--quiet"});
  ASSERT_EQ(split.exit_code, 0) << split.err;
  const auto types = manifest_types(dir / "q8");
  EXPECT_EQ(types.at("model.layers.0.self_attn.q_proj.weight"), "Q8_0");
  // The GGUF's q/k rows come back in Hugging Face order before quantization: the split agrees
  // with the GGUF file (measured: the same 8 greedy ids, worst |delta log-likelihood| 0.083 per
  // token).
  const std::string gguf = test::fixture("gguf_models/gqa-f16.gguf");
  EXPECT_EQ(greedy(dir / "q8", "1 5 9", 8), greedy(gguf, "1 5 9", 8));
  const std::string input = write_score_input(dir, 128);
  EXPECT_LT(worst_per_token(scores(dir / "q8", input), scores(gguf, input), 4), 0.12);
  // Blocks are not quantized again.
  auto refused = layerwise({"split", "--model", test::fixture("gguf_models/mha-q8_0.gguf"), "--out", dir / "again", "--quantize",
                            "q4_k", "--quiet"});
  expect_failure(refused, 1, "is already quantized (Q8_0); --quantize needs a float source");
  EXPECT_FALSE(std::filesystem::exists(dir / "again/manifest.json"));
  EXPECT_FALSE(std::filesystem::exists(dir / "again/embed.safetensors"));
}

// llama.cpp's llama_tensor_get_type: the output tensor (token_embd when the embedding is tied and
// there is none) is Q6_K for every type but Q8_0, on rows of a multiple of 256 as here.
TEST(CliQuantize, TheHeadIsQ6KForEverySchemeButQ8_0) {
  const std::vector<int64_t> shape{8000, 512};
  const auto type = [&](const std::string& scheme, Role role, bool tied) {
    return std::string(dtype_name(split_tensor_type(scheme, role, 0, 2, tied, shape, DType::F16)));
  };
  for (const std::string scheme : {"q4_0", "q4_k", "q5_k", "q6_k", "iq4_xs", "q4_k_m"}) {
    SCOPED_TRACE(scheme);
    EXPECT_EQ(type(scheme, Role::LmHead, false), "Q6_K");
    EXPECT_EQ(type(scheme, Role::LmHead, true), "Q6_K");
    EXPECT_EQ(type(scheme, Role::Embed, true), "Q6_K");
  }
  EXPECT_EQ(type("q4_0", Role::Embed, false), "Q4_0");
  EXPECT_EQ(type("iq4_xs", Role::Embed, false), "IQ4_XS");
  EXPECT_EQ(type("q4_k_m", Role::Embed, false), "Q4_K");
  EXPECT_EQ(type("q4_0", Role::Wq, true), "Q4_0");
  EXPECT_EQ(type("q8_0", Role::LmHead, false), "Q8_0");
  EXPECT_EQ(type("q8_0", Role::Embed, true), "Q8_0");
}

TEST(CliQuantize, UsageErrors) {
  test::TempDir dir;
  expect_failure(layerwise({"split", "--model", test::fixture("mha-f32"), "--out", dir / "o", "--quantize", "q4_k", "--dtype", "f16"}), 2,
                 "--quantize or --dtype, not both");
  expect_failure(layerwise({"split", "--model", test::fixture("mha-f32"), "--out", dir / "o", "--quantize", "q3_k"}), 2, "--quantize");
  auto help = layerwise({"split", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("q4_k_m"), std::string::npos) << help.out;
}

TEST(CliQuantize, ManifestTensorTypesAreChecked) {
  test::TempDir dir;
  const std::string out = dir / "split";
  ASSERT_EQ(layerwise({"split", "--model", test::fixture("mha-f32"), "--out", out, "--quantize", "q8_0", "--quiet"}).exit_code, 0);
  const std::string original = test::read_file(out + "/manifest.json");
  auto json = nlohmann::json::parse(original);
  ASSERT_TRUE(json["units"][1].contains("tensors"));
  EXPECT_EQ(json["units"][1]["tensors"]["model.layers.0.self_attn.q_proj.weight"], "Q8_0");

  // An unknown type name: refused naming the file and the tensor.
  json["units"][1]["tensors"]["model.layers.0.self_attn.q_proj.weight"] = "Q9_Z";
  test::write_file(out + "/manifest.json", json.dump());
  expect_failure(layerwise({"generate", "--model", out, "--prompt-ids", "1 2", "--max-new-tokens", "1"}), 1,
                 "unit file 'layer-000.safetensors', tensor 'model.layers.0.self_attn.q_proj.weight': unknown weight type \"Q9_Z\"");
  expect_failure(layerwise({"info", "--model", out, "--no-measure"}), 1, "unknown weight type \"Q9_Z\"");

  // A known type that is not what the file holds.
  json["units"][1]["tensors"]["model.layers.0.self_attn.q_proj.weight"] = "Q4_0";
  test::write_file(out + "/manifest.json", json.dump());
  expect_failure(layerwise({"generate", "--model", out, "--prompt-ids", "1 2", "--max-new-tokens", "1"}), 1,
                 "tensor 'model.layers.0.self_attn.q_proj.weight' is Q8_0 but the manifest says Q4_0");

  // Manifests from before the types were recorded still open.
  for (auto& unit : json["units"]) unit.erase("tensors");
  test::write_file(out + "/manifest.json", json.dump());
  auto old = layerwise({"generate", "--model", out, "--prompt-ids", "1 2", "--max-new-tokens", "2", "--output-ids"});
  EXPECT_EQ(old.exit_code, 0) << old.err;
  EXPECT_EQ(layerwise({"split", "--verify", "--out", out, "--quiet"}).exit_code, 0);
}

// A non-finite weight stops the split naming the tensor and the row; nothing looks complete.
TEST(CliQuantize, NonFiniteWeightsStopTheSplit) {
  test::TempDir dir;
  const std::string model = dir / "model";
  test::copy_dir(test::fixture("mha-f32"), model);
  std::string bytes = test::read_file(model + "/model.safetensors");
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  const auto header = nlohmann::json::parse(bytes.substr(8, header_size));
  const std::string name = "model.layers.1.mlp.up_proj.weight";
  const uint64_t begin = header[name]["data_offsets"][0].get<uint64_t>();
  const uint64_t row_bytes = 32 * 4;  // hidden 32, F32
  const float nan = NAN;
  std::memcpy(bytes.data() + 8 + header_size + begin + 5 * row_bytes + 12, &nan, 4);  // row 5
  test::write_file(model + "/model.safetensors", bytes);
  auto result = layerwise({"split", "--model", model, "--out", dir / "out", "--quantize", "q8_0", "--quiet"});
  expect_failure(result, 1, "tensor '" + name + "': Q8_0 quantization: element 3 of row 5 is not finite (nan)");
  EXPECT_FALSE(std::filesystem::exists(dir / "out/manifest.json"));
}

// The resume journal knows the scheme: an interrupted q8_0 split is not continued as q4_0.
TEST(CliQuantize, ResumeOnlyTheSameScheme) {
  test::TempDir dir;
  const std::string out = dir / "split";
  setenv("LAYERWISE_TEST_SPLIT_KILL_AFTER", "2", 1);
  auto killed = layerwise({"split", "--model", test::fixture("mha-f32"), "--out", out, "--quantize", "q8_0", "--quiet"});
  unsetenv("LAYERWISE_TEST_SPLIT_KILL_AFTER");
  EXPECT_NE(killed.exit_code, 0);
  auto other = layerwise({"split", "--model", test::fixture("mha-f32"), "--out", out, "--quantize", "q4_0", "--quiet"});
  ASSERT_EQ(other.exit_code, 0) << other.err;
  EXPECT_NE(other.err.find("5 unit files written"), std::string::npos) << other.err;
  EXPECT_NE(other.err.find("0 kept"), std::string::npos) << other.err;
  EXPECT_EQ(manifest_types(out).at("model.layers.0.mlp.up_proj.weight"), "Q4_0");

  setenv("LAYERWISE_TEST_SPLIT_KILL_AFTER", "2", 1);
  killed = layerwise({"split", "--model", test::fixture("mha-f32"), "--out", dir / "same", "--quantize", "q8_0", "--quiet"});
  unsetenv("LAYERWISE_TEST_SPLIT_KILL_AFTER");
  EXPECT_NE(killed.exit_code, 0);
  auto same = layerwise({"split", "--model", test::fixture("mha-f32"), "--out", dir / "same", "--quantize", "q8_0", "--quiet"});
  ASSERT_EQ(same.exit_code, 0) << same.err;
  EXPECT_NE(same.err.find("2 kept from an interrupted run"), std::string::npos) << same.err;
}

}  // namespace
}  // namespace lw
