// Config parsing, RoPE frequencies, the planner and the sampler, each against an independent
// computation (the CPU kernels: test_kernels.cpp).
#include <gtest/gtest.h>

#include <tuple>

#include <cmath>
#include <cstring>
#include <random>

#include "backend/backend.h"
#include "checkpoint/checkpoint.h"
#include "common/error.h"
#include "model/config.h"
#include "plan/plan.h"
#include "sample/sampler.h"
#include "helpers.h"

namespace lw {
namespace {

nlohmann::json base_config() {
  return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 100},
          {"hidden_size", 32},  {"intermediate_size", 64}, {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"max_position_embeddings", 64}};
}

std::string config_error(const nlohmann::json& config) {
  try {
    parse_model_config(config, nullptr, "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, ReadsDefaultsAndBothRopeStyles) {
  ModelConfig c = parse_model_config(base_config(), nullptr, "config.json");
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.rope.type, RopeType::Default);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);

  auto classic = base_config();
  classic["rope_theta"] = 500000.0;
  classic["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  c = parse_model_config(classic, nullptr, "config.json");
  EXPECT_EQ(c.rope.type, RopeType::Linear);
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);

  auto v5 = base_config();
  v5["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 20000.0}, {"factor", 4.0}};
  c = parse_model_config(v5, nullptr, "config.json");
  EXPECT_EQ(c.rope.type, RopeType::Dynamic);
  EXPECT_DOUBLE_EQ(c.rope.theta, 20000.0);
  EXPECT_EQ(c.rope.original_max_position, 64);

  c = parse_model_config(base_config(), {{"eos_token_id", {2, 7}}}, "config.json");
  EXPECT_EQ(c.eos_token_ids, std::vector<int>({2, 7}));
}

TEST(Config, RejectsWhatItCannotRun) {
  auto config = base_config();
  config["architectures"] = {"MistralForCausalLM"};
  EXPECT_NE(config_error(config).find("unsupported architecture 'MistralForCausalLM'"), std::string::npos);
  config = base_config();
  config.erase("hidden_size");
  EXPECT_NE(config_error(config).find("config.json: missing \"hidden_size\""), std::string::npos);
  config = base_config();
  config["num_key_value_heads"] = 3;
  EXPECT_NE(config_error(config).find("not a multiple"), std::string::npos);
  config = base_config();
  config["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  EXPECT_NE(config_error(config).find("'yarn' is not supported"), std::string::npos);
  config = base_config();
  config["hidden_size"] = "32";
  EXPECT_NE(config_error(config).find("positive integer"), std::string::npos);
}

// A copy of stories260K (5 layers, tied head) with its config changed and extra tensors of one
// float each appended to model.safetensors.
std::string stories_copy(const test::TempDir& dir, int layers, const std::vector<std::string>& extra_tensors) {
  const std::string model = dir / "model";
  test::copy_dir(test::stories_path(), model);
  nlohmann::json config = test::load_json(model + "/config.json");
  config["num_hidden_layers"] = layers;
  test::write_file(model + "/config.json", config.dump(2));
  if (extra_tensors.empty()) return model;
  const std::string bytes = test::read_file(model + "/model.safetensors");
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes.data(), 8);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_bytes));
  std::string data = bytes.substr(8 + header_bytes);
  for (const auto& name : extra_tensors) {
    header[name] = {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {data.size(), data.size() + 4}}};
    data.append(4, '\0');
  }
  const std::string text = header.dump();
  std::string length(8, '\0');
  const uint64_t text_bytes = text.size();
  std::memcpy(length.data(), &text_bytes, 8);
  test::write_file(model + "/model.safetensors", length + text + data);
  return model;
}

TEST(Checkpoint, LayersBeyondTheConfigurationAreAnErrorNamingFileAndTensors) {
  test::TempDir dir;
  const std::string model = stories_copy(dir, 3, {});
  try {
    Checkpoint::open(model);
    ADD_FAILURE() << "a checkpoint with 5 layers opened as 3";
  } catch (const Error& error) {
    EXPECT_EQ(std::string(error.what()), model + "/model.safetensors: 18 tensors the configuration does not use: model.layers.3.* "
                                                 "model.layers.4.* (" + model + "/config.json says num_hidden_layers 3; the "
                                                 "weights have more layers than the configuration says, so it would run on "
                                                 "the first 3 only)");
  }
}

TEST(Checkpoint, OtherUnusedTensorsAreIgnoredWithAWarningAndInvFreqSilently) {
  test::TempDir dir;
  const std::string model = stories_copy(dir, 5, {"model.layers.0.self_attn.rotary_emb.inv_freq", "model.layers.1.self_attn.q_proj.bias",
                                                  "vision_tower.weight"});
  const Checkpoint checkpoint = Checkpoint::open(model);
  EXPECT_EQ(checkpoint.config.num_layers, 5);
  EXPECT_EQ(checkpoint.warnings, std::vector<std::string>{model + "/model.safetensors: ignoring 2 tensors the model does not use: "
                                                                  "model.layers.1.self_attn.q_proj.bias, vision_tower.weight"});
  EXPECT_TRUE(Checkpoint::open(test::stories_path()).warnings.empty());
}

TEST(Rope, Llama3FrequenciesFollowTheThreeBands) {
  auto json = base_config();
  json["head_dim"] = 8;
  json["rope_theta"] = 500000.0;
  json["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 256}};
  ModelConfig c = parse_model_config(json, nullptr, "config.json");
  std::vector<float> f = rope_inverse_frequencies(c, 1);
  ASSERT_EQ(f.size(), 4u);
  // Unscaled: 500000^(-i/4). Wavelengths 6.3 (high band: kept), 167 (middle: smoothed),
  // 4443 and 118143 (low band: divided by the factor).
  const double base[4] = {1.0, std::pow(500000.0, -0.25), std::pow(500000.0, -0.5), std::pow(500000.0, -0.75)};
  EXPECT_NEAR(f[0], base[0], 1e-6);
  const double smooth = (256 / (2 * M_PI / base[1]) - 1.0) / 3.0;
  EXPECT_NEAR(f[1], (1 - smooth) * base[1] / 8 + smooth * base[1], 1e-6 * base[1]);
  EXPECT_NEAR(f[2], base[2] / 8, 1e-6 * base[2]);
  EXPECT_NEAR(f[3], base[3] / 8, 1e-6 * base[3]);
}

TEST(Rope, DynamicBaseGrowsOnlyPastTheTrainedLength) {
  auto json = base_config();
  json["max_position_embeddings"] = 16;
  json["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  ModelConfig c = parse_model_config(json, nullptr, "config.json");
  EXPECT_EQ(rope_inverse_frequencies(c, 10), rope_inverse_frequencies(c, 16));
  std::vector<float> grown = rope_inverse_frequencies(c, 20);
  const double base = 10000.0 * std::pow(2.0 * 20 / 16 - 1, 8.0 / 6.0);
  EXPECT_NEAR(grown[1], std::pow(base, -0.25), 1e-6);
}

TEST(Planner, KeepsEverythingResidentWhenItFits) {
  ModelConfig c = parse_model_config(base_config(), nullptr, "config.json");
  std::vector<uint64_t> units = {0, 1 << 20, 1 << 20, 1 << 20};
  MemoryPlan plan = plan_memory(c, units, {64ull << 20, 1, 64, 16, false, 0, 1});
  EXPECT_FALSE(plan.streams());
  EXPECT_EQ(plan.resident_units(), 3);
  EXPECT_EQ(plan.tokens_per_sweep, 16);
  EXPECT_LE(plan.total_bytes(), 64ull << 20);
}

TEST(Planner, StreamsWithReadAheadAndKeepsWhatFits) {
  ModelConfig c = parse_model_config(base_config(), nullptr, "config.json");
  std::vector<uint64_t> units = {0, 4 << 20, 4 << 20, 4 << 20, 4 << 20, 4 << 20};
  MemoryPlan tight = plan_memory(c, units, {14ull << 20, 1, 64, 16, false, 0, 1});
  EXPECT_TRUE(tight.streams());
  EXPECT_EQ(tight.stream_slots, 1);  // 8 MiB overhead + 8 MiB for two slots does not fit with the rest
  EXPECT_LE(tight.total_bytes(), 14ull << 20);
  MemoryPlan roomy = plan_memory(c, units, {26ull << 20, 1, 64, 16, false, 0, 1});
  EXPECT_EQ(roomy.stream_slots, 2);
  EXPECT_EQ(roomy.resident_units(), 2);
  EXPECT_EQ(roomy.streamed_bytes_per_sweep, 12ull << 20);
  EXPECT_LE(roomy.total_bytes(), 26ull << 20);
}

TEST(Planner, RefusesATooSmallBudgetAndSaysTheMinimum) {
  ModelConfig c = parse_model_config(base_config(), nullptr, "config.json");
  std::vector<uint64_t> units = {0, 4 << 20, 4 << 20};
  try {
    plan_memory(c, units, {1 << 20, 1, 64, 16, false, 0, 1});
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too small: this run needs at least 12.0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lw

namespace lw {
namespace {

TEST(Sampler, GreedyPicksTheLargestLogit) {
  Sampler sampler({});
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f};
  EXPECT_EQ(sampler.sample(logits.data(), 4, {}), 1);
}

TEST(Sampler, RepetitionPenaltyFollowsTransformers) {
  // transformers divides positive logits and multiplies negative ones, once per distinct token.
  SamplingOptions options;
  options.repeat_penalty = 2.0f;
  Sampler sampler(options);
  std::vector<float> logits = {3.0f, 2.0f, -1.0f, 1.9f};
  EXPECT_EQ(sampler.sample(logits.data(), 4, {0, 0, 2}), 1);
  EXPECT_FLOAT_EQ(logits[0], 1.5f);
  EXPECT_FLOAT_EQ(logits[2], -2.0f);
  EXPECT_FLOAT_EQ(logits[1], 2.0f);
}

TEST(Sampler, SeedReproducesAndTopKTopPRestrictTheChoice) {
  std::vector<float> base = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 1.5f};
  auto draw = [&](SamplingOptions options, int n) {
    Sampler sampler(options);
    std::vector<int> out;
    for (int i = 0; i < n; i++) {
      std::vector<float> logits = base;
      out.push_back(sampler.sample(logits.data(), 6, {}));
    }
    return out;
  };
  SamplingOptions options;
  options.temperature = 1.0f;
  options.seed = 7;
  EXPECT_EQ(draw(options, 50), draw(options, 50));
  options.seed = 8;
  SamplingOptions other_seed = options;
  other_seed.seed = 7;
  EXPECT_NE(draw(options, 50), draw(other_seed, 50));
  options.top_k = 2;
  for (int token : draw(options, 200)) EXPECT_TRUE(token == 4 || token == 5);
  options.top_k = 0;
  options.top_p = 0.3f;  // the top token alone holds about 0.42 of the mass
  for (int token : draw(options, 100)) EXPECT_EQ(token, 4);
}

TEST(Sampler, FrequenciesFollowTheTemperedSoftmax) {
  std::vector<float> base = {1.0f, 0.0f, -1.0f};
  SamplingOptions options;
  options.temperature = 2.0f;
  options.seed = 3;
  Sampler sampler(options);
  std::vector<int> counts(3);
  const int draws = 20000;
  for (int i = 0; i < draws; i++) {
    std::vector<float> logits = base;
    counts[static_cast<size_t>(sampler.sample(logits.data(), 3, {}))]++;
  }
  const double z = std::exp(0.5) + 1 + std::exp(-0.5);
  const double expected[3] = {std::exp(0.5) / z, 1 / z, std::exp(-0.5) / z};
  for (int i = 0; i < 3; i++) EXPECT_NEAR(counts[static_cast<size_t>(i)] / static_cast<double>(draws), expected[i], 0.015);
}

}  // namespace
}  // namespace lw
