// Config parsing, RoPE frequencies, the planner and the CPU kernels, each against an
// independent computation.
#include <gtest/gtest.h>

#include <tuple>

#include <cmath>
#include <random>

#include "backend/backend.h"
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

// Reference computations in double precision.
std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0, 1);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

class Kernels : public ::testing::TestWithParam<DType> {};

TEST_P(Kernels, MatmulMatchesDoublePrecision) {
  const DType dtype = GetParam();
  // 1 and 3 tokens take the decode kernels, 5 the blocked one and its remainder; 70 columns
  // leave tails after 16-wide vectors, 37 rows a partial block of four.
  for (const int tokens : {1, 3, 5}) {
  SCOPED_TRACE(tokens);
  const int rows = 37, cols = 70;
  auto backend = make_cpu_backend(2);
  std::vector<float> x = random_values(static_cast<size_t>(tokens * cols), 1), w = random_values(static_cast<size_t>(rows * cols), 2),
                     bias = random_values(rows, 3);
  std::vector<char> stored(static_cast<size_t>(rows * cols) * dtype_size(dtype));
  convert(w.data(), DType::F32, stored.data(), dtype, w.size());
  convert_to_f32(stored.data(), dtype, w.size(), w.data());  // the values the kernel actually sees
  std::vector<float> y(static_cast<size_t>(tokens * rows));
  WeightView weights{stored.data(), dtype, rows, cols}, bias_view{bias.data(), DType::F32, 1, rows};
  backend->matmul(y.data(), x.data(), tokens, weights, &bias_view);
  for (int t = 0; t < tokens; t++)
    for (int r = 0; r < rows; r++) {
      double expected = bias[r];
      for (int c = 0; c < cols; c++) expected += static_cast<double>(x[t * cols + c]) * w[r * cols + c];
      EXPECT_NEAR(y[t * rows + r], expected, 1e-4) << "t " << t << " r " << r;
    }
  }
}

TEST_P(Kernels, MatmulResultsDoNotDependOnHowTokensAreGrouped) {
  // A streamed prefill is cut into sweeps of any size: a token's products must come out
  // bit-identical whether it passes alone, in a group of four or in a remainder.
  const DType dtype = GetParam();
  const int tokens = 7, rows = 9, cols = 83;
  auto backend = make_cpu_backend(2);
  std::vector<float> x = random_values(static_cast<size_t>(tokens * cols), 4), w = random_values(static_cast<size_t>(rows * cols), 5);
  std::vector<char> stored(static_cast<size_t>(rows * cols) * dtype_size(dtype));
  convert(w.data(), DType::F32, stored.data(), dtype, w.size());
  const WeightView weights{stored.data(), dtype, rows, cols};
  std::vector<float> together(static_cast<size_t>(tokens * rows)), grouped(together.size());
  backend->matmul(together.data(), x.data(), tokens, weights, nullptr);
  for (const auto& [first, count] : {std::pair{0, 1}, std::pair{1, 5}, std::pair{6, 1}})
    backend->matmul(grouped.data() + first * rows, x.data() + first * cols, count, weights, nullptr);
  EXPECT_EQ(grouped, together);
}

TEST_P(Kernels, Bf16MatmulMatchesDoublePrecisionOfRoundedInputs) {
  // Compute dtype BF16: from 16 tokens on, AMX tiles (where the CPU has them) multiply
  // bfloat16-rounded activations and weights, accumulating in float32. Awkward sizes: token
  // counts that are not multiples of the 32-token tile block, columns not multiples of 32, a
  // partial block of rows.
  const DType dtype = GetParam();
  auto backend = make_cpu_backend(2);
  backend->set_compute_dtype(DType::BF16);
  for (const auto& [tokens, rows, cols] : {std::tuple{16, 37, 70}, std::tuple{33, 64, 96}, std::tuple{47, 5, 33}}) {
    SCOPED_TRACE(std::to_string(tokens) + "x" + std::to_string(rows) + "x" + std::to_string(cols));
    std::vector<float> x = random_values(static_cast<size_t>(tokens * cols), 1), w = random_values(static_cast<size_t>(rows * cols), 2),
                       bias = random_values(static_cast<size_t>(rows), 3);
    std::vector<char> stored(static_cast<size_t>(rows * cols) * dtype_size(dtype));
    convert(w.data(), DType::F32, stored.data(), dtype, w.size());
    std::vector<float> y(static_cast<size_t>(tokens * rows));
    WeightView weights{stored.data(), dtype, rows, cols}, bias_view{bias.data(), DType::F32, 1, rows};
    backend->matmul(y.data(), x.data(), tokens, weights, &bias_view);
    // What the tiles see: both operands rounded to bfloat16 (the F32 fallback is closer still).
    auto rounded = [](float v) { return bf16_to_f32(f32_to_bf16(v)); };
    std::vector<float> w_seen(w.size());
    convert_to_f32(stored.data(), dtype, w.size(), w_seen.data());
    for (int t = 0; t < tokens; t++)
      for (int r = 0; r < rows; r++) {
        double expected = bias[static_cast<size_t>(r)], magnitude = 0;
        for (int c = 0; c < cols; c++) {
          const double product = static_cast<double>(rounded(x[static_cast<size_t>(t * cols + c)])) * rounded(w_seen[static_cast<size_t>(r * cols + c)]);
          expected += product;
          magnitude += std::abs(product);
        }
        // Rounded inputs, float32 sums: exact up to float32 accumulation.
        EXPECT_NEAR(y[static_cast<size_t>(t * rows + r)], expected, 1e-5 * magnitude + 1e-5) << "t " << t << " r " << r;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, Kernels, ::testing::Values(DType::F32, DType::F16, DType::BF16));

TEST(Kernels, TiledAttentionMatchesAFullSoftmax) {
  const int heads = 4, kv_heads = 2, head_dim = 16, context = 150;  // several 64-key tiles
  auto backend = make_cpu_backend(2);
  const int kv_dim = kv_heads * head_dim;
  std::vector<float> k = random_values(static_cast<size_t>(2 * context * kv_dim), 4),
                     v = random_values(static_cast<size_t>(2 * context * kv_dim), 5);
  const std::vector<KvSequence> layout = {{0, 0, context, -1}, {static_cast<size_t>(context * kv_dim), 0, context, -1}};
  KvLayer cache{k.data(), v.data(), kv_dim, layout.data()};
  std::vector<int32_t> positions = {0, 63, 64, 149}, sequences = {0, 1, 1, 0};
  TokenPlacement placement{4, positions.data(), sequences.data()};
  std::vector<float> q = random_values(static_cast<size_t>(4 * heads * head_dim), 6), out(q.size());
  backend->attention(out.data(), q.data(), cache, placement, heads, kv_heads, head_dim);
  for (int t = 0; t < 4; t++)
    for (int h = 0; h < heads; h++) {
      const float* query = &q[static_cast<size_t>((t * heads + h) * head_dim)];
      const size_t base = static_cast<size_t>(sequences[t] * context * kv_dim + h / 2 * head_dim);
      std::vector<double> scores(static_cast<size_t>(positions[t] + 1));
      double top = -1e300, total = 0;
      for (int p = 0; p <= positions[t]; p++) {
        double s = 0;
        for (int d = 0; d < head_dim; d++) s += static_cast<double>(query[d]) * k[base + static_cast<size_t>(p * kv_dim + d)];
        scores[static_cast<size_t>(p)] = s / std::sqrt(16.0);
        top = std::max(top, scores[static_cast<size_t>(p)]);
      }
      for (double& s : scores) total += s = std::exp(s - top);
      for (int d = 0; d < head_dim; d++) {
        double expected = 0;
        for (int p = 0; p <= positions[t]; p++) expected += scores[static_cast<size_t>(p)] / total * v[base + static_cast<size_t>(p * kv_dim + d)];
        EXPECT_NEAR(out[static_cast<size_t>((t * heads + h) * head_dim + d)], expected, 1e-5);
      }
    }
}

TEST(Kernels, SequencesContinuingASharedPrefixAttendAsIfTheyHeldACopy) {
  // Sequence 0 holds a 100-token prefix; sequences 1 and 2 continue it with their own positions
  // 100.. and read positions 0..99 from sequence 0. Attention must be bit-identical to sequences
  // that hold a private copy of the prefix (same tiles, same order).
  const int heads = 4, kv_heads = 2, head_dim = 16, kv_dim = kv_heads * head_dim, prefix = 100, own = 30;
  auto backend = make_cpu_backend(2);
  const auto prefix_k = random_values(static_cast<size_t>(prefix * kv_dim), 7), prefix_v = random_values(prefix_k.size(), 8);
  const auto own_k = random_values(static_cast<size_t>(2 * own * kv_dim), 9), own_v = random_values(own_k.size(), 10);
  const size_t prefix_floats = prefix_k.size(), own_floats = static_cast<size_t>(own * kv_dim);
  // Shared: [prefix | own of 1 | own of 2].
  std::vector<float> shared_k(prefix_k), shared_v(prefix_v);
  shared_k.insert(shared_k.end(), own_k.begin(), own_k.end());
  shared_v.insert(shared_v.end(), own_v.begin(), own_v.end());
  const std::vector<KvSequence> shared_layout = {
      {0, 0, prefix, -1}, {prefix_floats, prefix, own, 0}, {prefix_floats + own_floats, prefix, own, 0}};
  // Copied: two sequences of prefix + own.
  std::vector<float> copied_k, copied_v;
  for (int s = 0; s < 2; s++) {
    copied_k.insert(copied_k.end(), prefix_k.begin(), prefix_k.end());
    copied_k.insert(copied_k.end(), own_k.begin() + s * static_cast<long>(own_floats), own_k.begin() + (s + 1) * static_cast<long>(own_floats));
    copied_v.insert(copied_v.end(), prefix_v.begin(), prefix_v.end());
    copied_v.insert(copied_v.end(), own_v.begin() + s * static_cast<long>(own_floats), own_v.begin() + (s + 1) * static_cast<long>(own_floats));
  }
  const std::vector<KvSequence> copied_layout = {{0, 0, prefix + own, -1}, {prefix_floats + own_floats, 0, prefix + own, -1}};
  std::vector<int32_t> positions = {100, 129, 100, 115};
  std::vector<int32_t> shared_sequences = {1, 1, 2, 2}, copied_sequences = {0, 0, 1, 1};
  const auto q = random_values(static_cast<size_t>(4 * heads * head_dim), 11);
  std::vector<float> shared_out(q.size()), copied_out(q.size());
  backend->attention(shared_out.data(), q.data(), KvLayer{shared_k.data(), shared_v.data(), kv_dim, shared_layout.data()},
                     TokenPlacement{4, positions.data(), shared_sequences.data()}, heads, kv_heads, head_dim);
  backend->attention(copied_out.data(), q.data(), KvLayer{copied_k.data(), copied_v.data(), kv_dim, copied_layout.data()},
                     TokenPlacement{4, positions.data(), copied_sequences.data()}, heads, kv_heads, head_dim);
  EXPECT_EQ(shared_out, copied_out);
  // store_kv writes a continuing sequence's keys into its own region, never into the prefix.
  std::vector<float> k_new(static_cast<size_t>(kv_dim), 1.5f), v_new(static_cast<size_t>(kv_dim), -2.5f);
  std::vector<int32_t> at = {101}, in = {2};
  backend->store_kv(KvLayer{shared_k.data(), shared_v.data(), kv_dim, shared_layout.data()}, k_new.data(), v_new.data(),
                    TokenPlacement{1, at.data(), in.data()});
  EXPECT_EQ(shared_k[prefix_floats + own_floats + static_cast<size_t>(kv_dim)], 1.5f);
  EXPECT_EQ(shared_v[prefix_floats + own_floats + static_cast<size_t>(kv_dim)], -2.5f);
  EXPECT_TRUE(std::equal(prefix_k.begin(), prefix_k.end(), shared_k.begin()));
}

TEST(Kernels, RmsnormAndSwiglu) {
  auto backend = make_cpu_backend(1);
  std::vector<float> x = {1, 2, 3, 4}, gain = {1, 0.5f, 2, 1}, y(4);
  backend->rmsnorm(y.data(), x.data(), 1, {gain.data(), DType::F32, 1, 4}, 1e-5f);
  const double rms = std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-5);
  for (int i = 0; i < 4; i++) EXPECT_NEAR(y[i], x[i] / rms * gain[i], 1e-6);
  std::vector<float> gate = {-1, 0, 2}, up = {3, 4, 5};
  backend->swiglu(gate.data(), up.data(), 3);
  EXPECT_NEAR(gate[0], -1 / (1 + std::exp(1.0)) * 3, 1e-6);
  EXPECT_EQ(gate[1], 0);
  EXPECT_NEAR(gate[2], 2 / (1 + std::exp(-2.0)) * 5, 1e-6);
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
