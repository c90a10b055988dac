// The KV cache in F16 or BF16 (--kv-dtype): store_kv's rounding and the attention kernels at
// every instruction-set level this CPU can run, against double precision on the rounded keys and
// values; the engine with a half-precision cache against its float32 cache on the fixtures; the
// default per checkpoint; the planner's bytes; the flag on the command line.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "common/error.h"
#include "common/sizes.h"
#include "format/dtype.h"
#include "attention_reference.h"
#include "kernel_helpers.h"
#include "helpers.h"
#include "model/config.h"
#include "plan/plan.h"
#include "runtime/engine.h"
#include "runtime/generate.h"
#include "score/score.h"

namespace lw {
namespace {

using test::kLevels;
using test::random_values;

uint16_t rounded_bits(DType dtype, float x) { return dtype == DType::F16 ? f32_to_f16(x) : f32_to_bf16(x); }
float widened(DType dtype, uint16_t bits) { return dtype == DType::F16 ? f16_to_f32(bits) : bf16_to_f32(bits); }

// ---------------------------------------------------------------------------------------------
// Kernels

class HalfCacheKernels : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(HalfCacheKernels, StoreKvRoundsToNearestEvenIntoEachSequencesOwnRegion) {
  const auto& [level, dtype] = GetParam();
  BACKEND_OR_SKIP(backend, level);
  const bool f16 = dtype == DType::F16;
  // Ties to even both ways, just past a tie, the largest value F16 holds and one that rounds down
  // to it (BF16: far larger ones), tiny values (F16 subnormals), signed zero, NaN, infinity,
  // ordinary values.
  const float ulp = f16 ? 0x1p-10f : 0x1p-7f;
  std::vector<float> special = {1 + ulp / 2, 1 + 3 * ulp / 2, 1 + ulp / 2 + 0x1p-20f, -(1 + 3 * ulp / 2), 65504.0f, 65519.0f,
                                f16 ? -65504.0f : 3e38f, 1e-7f, -3e-6f, 0.0f, -0.0f, NAN, INFINITY, 0.1f, -2.5f, 1e-30f};
  const int kv_dim = static_cast<int>(special.size());
  // A prefix sequence of 3 positions and one continuing it at positions 3..4 (parent 0).
  const std::vector<KvSequence> layout = {{0, 0, 3, -1}, {static_cast<size_t>(3 * kv_dim), 3, 2, 0}};
  std::vector<uint16_t> k(static_cast<size_t>(5 * kv_dim), 0xFFFF), v(k.size(), 0xFFFF);
  const KvLayer cache{k.data(), v.data(), kv_dim, layout.data(), dtype};
  std::vector<float> keys(special), values;
  keys.insert(keys.end(), special.rbegin(), special.rend());
  for (float x : keys) values.push_back(-x);
  const std::vector<int32_t> positions = {1, 4}, sequences = {0, 1};
  backend->store_kv(cache, keys.data(), values.data(), {2, positions.data(), sequences.data()});
  for (int t = 0; t < 2; t++) {
    const size_t at = cache.at(sequences[static_cast<size_t>(t)], positions[static_cast<size_t>(t)]);
    EXPECT_EQ(at, static_cast<size_t>(t == 0 ? kv_dim : 4 * kv_dim));
    for (int i = 0; i < kv_dim; i++) {
      const size_t in = static_cast<size_t>(t * kv_dim + i);
      EXPECT_EQ(k[at + static_cast<size_t>(i)], rounded_bits(dtype, keys[in])) << "token " << t << " value " << keys[in];
      EXPECT_EQ(v[at + static_cast<size_t>(i)], rounded_bits(dtype, values[in])) << "token " << t << " value " << values[in];
    }
  }
  // The ties and overflow by their known bit patterns (format/dtype.h's functions are checked
  // against numpy elsewhere; this pins what the cache does with them).
  EXPECT_EQ(k[static_cast<size_t>(kv_dim) + 0], f16 ? 0x3C00 : 0x3F80);  // 1 + ulp/2: to even, down
  EXPECT_EQ(k[static_cast<size_t>(kv_dim) + 1], f16 ? 0x3C02 : 0x3F82);  // 1 + 3ulp/2: to even, up
  EXPECT_EQ(k[static_cast<size_t>(kv_dim) + 2], f16 ? 0x3C01 : 0x3F81);  // past the tie: up
  if (f16) {
    EXPECT_EQ(k[static_cast<size_t>(kv_dim) + 5], 0x7BFF);  // 65519: down to 65504, the largest F16
  }
  // Untouched: the other positions of the prefix and of the continuing sequence.
  for (int p : {0, 2, 3})
    for (int i = 0; i < kv_dim; i++) EXPECT_EQ(k[static_cast<size_t>(p * kv_dim + i)], 0xFFFF) << "position " << p;
}

TEST(KvCacheTypes, AValueBeyondFloat16sRangeIsRefusedNotStoredAsInfinity) {
  // 65520 rounds to infinity in F16, and every attention over it to NaN: store_kv refuses it,
  // naming the way out. BF16 holds it; infinity or NaN already in the input are not its business
  // (the engine stops on non-finite hidden states before they reach a cache).
  auto backend = make_cpu_backend(2);
  const int kv_dim = 4;
  const std::vector<KvSequence> layout = {{0, 0, 2, -1}};
  std::vector<uint16_t> k(2 * kv_dim), v(2 * kv_dim);
  const std::vector<int32_t> positions = {0, 1}, sequences = {0, 0};
  const std::vector<float> fine = {1, 2, 3, 65504, INFINITY, -INFINITY, NAN, 4};
  for (size_t big = 0; big < 2; big++) {
    std::vector<float> keys(fine), values(fine);
    (big ? values : keys)[1] = -70000.0f;
    for (DType dtype : {DType::F16, DType::BF16}) {
      const KvLayer cache{k.data(), v.data(), kv_dim, layout.data(), dtype};
      const TokenPlacement placement{2, positions.data(), sequences.data()};
      EXPECT_NO_THROW(backend->store_kv(cache, fine.data(), fine.data(), placement));
      if (dtype == DType::BF16) {
        EXPECT_NO_THROW(backend->store_kv(cache, keys.data(), values.data(), placement));
        continue;
      }
      try {
        backend->store_kv(cache, keys.data(), values.data(), placement);
        ADD_FAILURE() << "70000 stored in an F16 cache";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("beyond the range of float16"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("--kv-dtype bf16 or f32"), std::string::npos) << e.what();
      }
    }
  }
}

// A cache of both sequences' positions filled through store_kv, and what the kernels must see.
struct FilledCache {
  std::vector<uint16_t> k, v;
  std::vector<float> k_seen, v_seen;  // the stored values widened back
};

FilledCache fill(Backend& backend, DType dtype, const std::vector<KvSequence>& layout, int kv_dim, const std::vector<float>& k,
                 const std::vector<float>& v, const std::vector<int32_t>& positions, const std::vector<int32_t>& sequences) {
  FilledCache cache{std::vector<uint16_t>(k.size()), std::vector<uint16_t>(v.size()), {}, {}};
  backend.store_kv(KvLayer{cache.k.data(), cache.v.data(), kv_dim, layout.data(), dtype}, k.data(), v.data(),
                   {static_cast<int>(positions.size()), positions.data(), sequences.data()});
  for (uint16_t bits : cache.k) cache.k_seen.push_back(widened(dtype, bits));
  for (uint16_t bits : cache.v) cache.v_seen.push_back(widened(dtype, bits));
  return cache;
}


TEST_P(HalfCacheKernels, TiledAttentionMatchesDoublePrecisionOnTheRoundedValues) {
  const auto& [level, dtype] = GetParam();
  BACKEND_OR_SKIP(backend, level);
  // As test_kernels.cpp's float32 case, plus head_dim 20 (8-wide widening and a tail), 8 query
  // heads per kv head at head_dim 64 and 128 (the AVX-512 four-query path), and keys of 2e-5
  // against queries of 5e4: mostly F16 subnormals, whose decoding then moves the scores.
  struct Case {
    int heads, kv_heads, head_dim;
    float key_scale, query_scale;
  };
  for (const Case& c : {Case{4, 2, 16, 2, 1}, Case{3, 1, 64, 2, 1}, Case{8, 1, 64, 2, 1}, Case{2, 2, 8, 2, 1}, Case{4, 2, 128, 2, 1},
                        Case{8, 1, 128, 2, 1}, Case{6, 3, 20, 2, 1}, Case{4, 1, 64, 2e-5f, 5e4f}, Case{2, 1, 20, 2e-5f, 5e4f}}) {
    SCOPED_TRACE(std::to_string(c.heads) + " heads, " + std::to_string(c.kv_heads) + " kv heads, head_dim " + std::to_string(c.head_dim) +
                 ", keys of scale " + std::to_string(c.key_scale));
    const int context = 150, kv_dim = c.kv_heads * c.head_dim;
    const std::vector<KvSequence> layout = {{0, 0, context, -1}, {static_cast<size_t>(context * kv_dim), 0, context, -1}};
    std::vector<int32_t> all_positions, all_sequences;
    for (int s = 0; s < 2; s++)
      for (int p = 0; p < context; p++) all_positions.push_back(p), all_sequences.push_back(s);
    const FilledCache cache = fill(*backend, dtype, layout, kv_dim, random_values(static_cast<size_t>(2 * context * kv_dim), 4, c.key_scale),
                                   random_values(static_cast<size_t>(2 * context * kv_dim), 5), all_positions, all_sequences);
    const KvLayer layer{const_cast<uint16_t*>(cache.k.data()), const_cast<uint16_t*>(cache.v.data()), kv_dim, layout.data(), dtype};
    for (const auto& [positions, sequences] :
         {std::pair{std::vector<int32_t>{0}, std::vector<int32_t>{1}},
          std::pair{std::vector<int32_t>{0, 63, 64, 149}, std::vector<int32_t>{0, 1, 1, 0}},
          std::pair{std::vector<int32_t>{60, 61, 62, 63, 64, 65, 66}, std::vector<int32_t>{1, 1, 1, 1, 1, 1, 1}}}) {
      const TokenPlacement placement{static_cast<int>(positions.size()), positions.data(), sequences.data()};
      const std::vector<float> q = random_values(positions.size() * c.heads * c.head_dim, 6, c.query_scale);
      std::vector<float> out(q.size());
      backend->attention(out.data(), q.data(), layer, placement, c.heads, c.kv_heads, c.head_dim);
      test::expect_attention_matches(out, q, cache.k_seen, cache.v_seen, positions, sequences, context, c.heads, c.kv_heads, c.head_dim);
    }
  }
}

TEST_P(HalfCacheKernels, EveryFiniteValueIsWidenedExactly) {
  // One cached position: its softmax weight is exactly 1, so each output is the value as the
  // kernel widened it. Every finite bit pattern, through the one-query, pair and (AVX-512,
  // head_dim 64) four-query paths, at a head size with and without a tail past 8 and 16.
  const auto& [level, dtype] = GetParam();
  BACKEND_OR_SKIP(backend, level);
  std::vector<uint16_t> finite;
  for (uint32_t bits = 0; bits < 65536; bits++)
    if (std::isfinite(widened(dtype, static_cast<uint16_t>(bits)))) finite.push_back(static_cast<uint16_t>(bits));
  for (const int head_dim : {64, 24})
    for (const int group : {1, 2, 4}) {
      SCOPED_TRACE("head_dim " + std::to_string(head_dim) + ", " + std::to_string(group) + " query heads per kv head");
      const int kv_heads = static_cast<int>((finite.size() + static_cast<size_t>(head_dim) - 1) / static_cast<size_t>(head_dim));
      const int heads = kv_heads * group, kv_dim = kv_heads * head_dim;
      std::vector<uint16_t> k(static_cast<size_t>(kv_dim), 0), v(static_cast<size_t>(kv_dim), 0);
      std::copy(finite.begin(), finite.end(), v.begin());
      const std::vector<KvSequence> layout = {{0, 0, 1, -1}};
      const std::vector<int32_t> position = {0}, sequence = {0};
      const std::vector<float> q(static_cast<size_t>(heads * head_dim), 0.5f);
      std::vector<float> out(q.size());
      backend->attention(out.data(), q.data(), KvLayer{k.data(), v.data(), kv_dim, layout.data(), dtype}, {1, position.data(), sequence.data()},
                         heads, kv_heads, head_dim);
      int wrong = 0;
      for (int h = 0; h < heads; h++)
        for (int d = 0; d < head_dim; d++) {
          const float expected = widened(dtype, v[static_cast<size_t>(h / group * head_dim + d)]), got = out[static_cast<size_t>(h * head_dim + d)];
          if (got != expected && wrong++ < 5) ADD_FAILURE() << "head " << h << " d " << d << ": " << got << " for " << expected;
        }
      EXPECT_EQ(wrong, 0);
    }
}

TEST_P(HalfCacheKernels, SequencesContinuingASharedPrefixAttendAsIfTheyHeldACopy) {
  // test_kernels.cpp's shared-prefix case on a half-precision cache: sequences 1 and 2 continue
  // sequence 0's 100 positions, whose offsets (in elements) now count 2-byte values. Bit-identical
  // to sequences that hold a private copy.
  const auto& [level, dtype] = GetParam();
  BACKEND_OR_SKIP(backend, level);
  const int heads = 4, kv_heads = 2, head_dim = 16, kv_dim = kv_heads * head_dim, prefix = 100, own = 30;
  const auto prefix_k = random_values(static_cast<size_t>(prefix * kv_dim), 7), prefix_v = random_values(prefix_k.size(), 8);
  const auto own_k = random_values(static_cast<size_t>(2 * own * kv_dim), 9), own_v = random_values(own_k.size(), 10);
  const size_t prefix_values = prefix_k.size(), own_values = static_cast<size_t>(own * kv_dim);
  const std::vector<KvSequence> shared_layout = {
      {0, 0, prefix, -1}, {prefix_values, prefix, own, 0}, {prefix_values + own_values, prefix, own, 0}};
  const std::vector<KvSequence> copied_layout = {{0, 0, prefix + own, -1}, {prefix_values + own_values, 0, prefix + own, -1}};
  // Written through store_kv, token by token as a run would: the prefix once into sequence 0 (or
  // into both copies), each continuation into its own sequence.
  std::vector<uint16_t> shared_k(prefix_values + 2 * own_values), shared_v(shared_k.size()), copied_k(2 * (prefix_values + own_values)),
      copied_v(copied_k.size());
  const KvLayer shared{shared_k.data(), shared_v.data(), kv_dim, shared_layout.data(), dtype};
  const KvLayer copied{copied_k.data(), copied_v.data(), kv_dim, copied_layout.data(), dtype};
  for (int p = 0; p < prefix; p++) {
    const float* key = prefix_k.data() + p * kv_dim;
    const float* value = prefix_v.data() + p * kv_dim;
    const int32_t position = p, zero = 0, one = 1;
    backend->store_kv(shared, key, value, {1, &position, &zero});
    backend->store_kv(copied, key, value, {1, &position, &zero});
    backend->store_kv(copied, key, value, {1, &position, &one});
  }
  for (int s = 0; s < 2; s++)
    for (int p = 0; p < own; p++) {
      const float* key = own_k.data() + (s * own + p) * kv_dim;
      const float* value = own_v.data() + (s * own + p) * kv_dim;
      const int32_t position = prefix + p, in_shared = s + 1, in_copied = s;
      backend->store_kv(shared, key, value, {1, &position, &in_shared});
      backend->store_kv(copied, key, value, {1, &position, &in_copied});
    }
  std::vector<int32_t> positions = {100, 129, 100, 115};
  std::vector<int32_t> shared_sequences = {1, 1, 2, 2}, copied_sequences = {0, 0, 1, 1};
  const auto q = random_values(static_cast<size_t>(4 * heads * head_dim), 11);
  std::vector<float> shared_out(q.size()), copied_out(q.size());
  backend->attention(shared_out.data(), q.data(), shared, {4, positions.data(), shared_sequences.data()}, heads, kv_heads, head_dim);
  backend->attention(copied_out.data(), q.data(), copied, {4, positions.data(), copied_sequences.data()}, heads, kv_heads, head_dim);
  EXPECT_EQ(shared_out, copied_out);
  // And the prefix was rounded once, where it lies.
  for (size_t i = 0; i < prefix_values; i++) ASSERT_EQ(shared_k[i], rounded_bits(dtype, prefix_k[i])) << i;
}

TEST_P(HalfCacheKernels, ValuesTheHalfTypeHoldsExactlyGiveTheFloat32CachesBits) {
  // The widening is exact and the arithmetic after it is the float32 cache's, in the same order:
  // keys and values that are already F16 / BF16 numbers give bit-identical outputs from either
  // cache, on every path (one query, pairs, four at once; head sizes with and without a tail).
  const auto& [level, dtype] = GetParam();
  BACKEND_OR_SKIP(backend, level);
  for (const auto& [heads, kv_heads, head_dim] : {std::tuple{4, 2, 16}, std::tuple{3, 1, 64}, std::tuple{8, 1, 64}, std::tuple{8, 2, 128},
                                                  std::tuple{6, 3, 20}, std::tuple{1, 1, 7}}) {
    SCOPED_TRACE(std::to_string(heads) + " heads, " + std::to_string(kv_heads) + " kv heads, head_dim " + std::to_string(head_dim));
    const int context = 130, kv_dim = kv_heads * head_dim;
    const std::vector<float> k = random_values(static_cast<size_t>(context * kv_dim), 21, 2), v = random_values(k.size(), 22);
    std::vector<uint16_t> k_bits, v_bits;
    std::vector<float> k_exact, v_exact;
    for (size_t i = 0; i < k.size(); i++) {
      k_bits.push_back(rounded_bits(dtype, k[i])), v_bits.push_back(rounded_bits(dtype, v[i]));
      k_exact.push_back(widened(dtype, k_bits.back())), v_exact.push_back(widened(dtype, v_bits.back()));
    }
    const std::vector<KvSequence> layout = {{0, 0, context, -1}};
    std::vector<int32_t> positions = {129, 3, 64, 65, 66}, sequences = {0, 0, 0, 0, 0};
    const TokenPlacement placement{5, positions.data(), sequences.data()};
    const auto q = random_values(static_cast<size_t>(5 * heads * head_dim), 23);
    std::vector<float> from_f32(q.size()), from_half(q.size());
    backend->attention(from_f32.data(), q.data(), KvLayer{k_exact.data(), v_exact.data(), kv_dim, layout.data()}, placement, heads,
                       kv_heads, head_dim);
    backend->attention(from_half.data(), q.data(), KvLayer{k_bits.data(), v_bits.data(), kv_dim, layout.data(), dtype}, placement, heads,
                       kv_heads, head_dim);
    EXPECT_EQ(from_half, from_f32);
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, HalfCacheKernels, ::testing::Combine(::testing::ValuesIn(kLevels), ::testing::Values(DType::F16, DType::BF16)),
                         [](const auto& test) { return std::get<0>(test.param) + "_" + dtype_name(std::get<1>(test.param)); });

TEST(KvCacheTypes, AnUnsupportedCacheTypeIsRefused) {
  auto backend = make_cpu_backend(1);
  std::vector<float> k(8), v(8), x(8);
  const std::vector<KvSequence> layout = {{0, 0, 1, -1}};
  const std::vector<int32_t> position = {0}, sequence = {0};
  EXPECT_THROW(backend->store_kv(KvLayer{k.data(), v.data(), 8, layout.data(), DType::Q8_0}, x.data(), x.data(),
                                 {1, position.data(), sequence.data()}),
               Error);
}

// ---------------------------------------------------------------------------------------------
// The engine on the fixtures

const nlohmann::json& goldens() {
  static const nlohmann::json json = test::load_json(test::fixture("goldens.json"));
  return json;
}

EngineOptions with_cache(DType kv_dtype) {
  EngineOptions options{1ull << 30, 2, true, false, DType::F32};  // float32 products: only the cache differs
  options.kv_dtype = kv_dtype;
  return options;
}

// How far a half-precision cache may move the logits from the float32 cache's. Rounding to
// nearest even perturbs each key and value by a relative u at most: 2^-11 (F16), 2^-8 (BF16).
// F16: transformers running gqa-f16 natively rounds these same keys and values to f16 (its cache
// is in the model's dtype), and every other activation too; test_engine.cpp bounds that run's
// distance from float32 by 0.05 (kNativeF16Tolerance; measured 0.023), and the cache's rounding
// alone must stay inside it. BF16: differences this small are first order in u (measured here:
// bf16 moves the logits 6 to 9 times as far as f16, for a ratio of unit roundoffs of 8), so
// 0.05 x 8 = 0.4. Measured on the fixtures below: at most 0.029 (f16) and 0.17 (bf16).
double cache_tolerance(DType dtype) { return dtype == DType::F16 ? 0.05 : 0.05 * 8; }

class HalfCacheEngine : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(HalfCacheEngine, LogitsStayWithinTheRoundingOfTheCacheAndGreedyIdsAgreeWhereMarginsAllow) {
  const auto& [name, dtype] = GetParam();
  const auto& golden = goldens()[name];
  Engine exact(test::fixture(name), with_cache(DType::F32));
  Engine half(test::fixture(name), with_cache(dtype));
  ASSERT_EQ(half.kv_dtype(), dtype);
  const double tolerance = cache_tolerance(dtype);
  const auto prompts = test::golden_prompts(golden);
  GenerateOptions options;
  options.max_new_tokens = 16;
  options.stop_at_eos = false;
  const auto exact_ids = generate(exact, prompts, options), half_ids = generate(half, prompts, options);
  const size_t vocab = static_cast<size_t>(exact.config().vocab_size);
  double worst = 0;
  int compared = 0;
  for (size_t p = 0; p < prompts.size(); p++) {
    // The float32 cache's own continuation, teacher-forced through both: every step's logits.
    std::vector<int> sequence = prompts[p];
    sequence.insert(sequence.end(), exact_ids[p].begin(), exact_ids[p].end() - 1);
    const auto a = prompt_logits(exact, {sequence})[0], b = prompt_logits(half, {sequence})[0];
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); i++) worst = std::max(worst, static_cast<double>(std::abs(a[i] - b[i])));
    // A step's choice can differ only where the float32 margin between the best two logits is
    // within twice what that step's logits moved (plus 1e-3 for float32 summation order between
    // a whole prompt's pass and generation's); from the first such step on, the continuations
    // may part.
    for (size_t step = 0; step < exact_ids[p].size(); step++) {
      const size_t at = (prompts[p].size() - 1 + step) * vocab;
      const float* row = a.data() + at;
      float first = -INFINITY, second = -INFINITY, moved = 0;
      for (size_t t = 0; t < vocab; t++) {
        if (row[t] > first) second = first, first = row[t];
        else if (row[t] > second) second = row[t];
        moved = std::max(moved, std::abs(row[t] - b[at + t]));
      }
      if (first - second <= 2 * moved + 1e-3f) break;
      EXPECT_EQ(half_ids[p][step], exact_ids[p][step]) << "prompt " << p << " step " << step << " (margin " << first - second << ")";
      compared++;
    }
  }
  EXPECT_LT(worst, tolerance);
  EXPECT_GT(worst, 0.0) << "the cache was not rounded";
  EXPECT_GT(compared, 0) << "no step had a margin to compare";
  RecordProperty("max_logit_difference", std::to_string(worst));
  std::printf("[   KV     ] %s %s: max |logit difference| %.3g (tolerance %.3g), %d greedy steps compared\n", name.c_str(),
              dtype_name(dtype), worst, tolerance, compared);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HalfCacheEngine,
                         ::testing::Combine(::testing::Values("mha-f32", "gqa-tied-llama3-f32", "mqa-headdim-linear-bias-f32", "gqa-f16",
                                                              "gqa-bf16", "dynamic-f32"),
                                            ::testing::Values(DType::F16, DType::BF16)),
                         [](const auto& test) {
                           std::string name = std::get<0>(test.param) + "_" + dtype_name(std::get<1>(test.param));
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

TEST(HalfCacheRuns, StreamedAndBatchedRunsGiveTheSameLogitsAsResident) {
  // The cache's rounding happens once per key and value, whatever the budget and the sweeps.
  const std::string model = test::fixture("gqa-tied-llama3-f32");
  const auto prompts = test::golden_prompts(goldens()["gqa-tied-llama3-f32"]);
  Engine resident(model, with_cache(DType::F16));
  const auto expected = prompt_logits(resident, prompts);
  size_t total = 0, longest = 0;
  for (const auto& p : prompts) total += p.size(), longest = std::max(longest, p.size());
  const RunShape shape{static_cast<int>(prompts.size()), static_cast<int>(longest), static_cast<int>(total), true};
  EngineOptions least = with_cache(DType::F16);
  least.max_memory = resident.plan(shape).minimum_budget;
  Engine streamed(model, least);
  EXPECT_EQ(prompt_logits(streamed, prompts), expected);
  EXPECT_GT(streamed.stats().sweeps, 1);
}

TEST(KvCacheTypes, TheDefaultFollowsTheWeights) {
  const std::pair<std::string, DType> cases[] = {{test::fixture("mha-f32"), DType::F32},
                                                 {test::fixture("gqa-f16"), DType::F16},
                                                 {test::fixture("gqa-bf16"), DType::BF16},
                                                 {test::stories_path(), DType::F32},
                                                 {test::fixture("gguf_models/mha-f32.gguf"), DType::F32},
                                                 {test::fixture("gguf_models/gqa-f16.gguf"), DType::F16},
                                                 {test::fixture("gguf_models/mha-q8_0.gguf"), DType::F16},
                                                 {test::fixture("gguf_models/mha-q4_1.gguf"), DType::F16}};
  for (const auto& [path, expected] : cases) {
    Engine engine(path, {1ull << 30, 2, true, false});
    EXPECT_EQ(engine.kv_dtype(), expected) << path;
    EXPECT_TRUE(engine.kv_dtype_is_default());
    EXPECT_EQ(default_kv_dtype(engine.checkpoint()), expected) << path;
    EXPECT_EQ(engine.plan({1, 32, 32, false}).kv_dtype, expected) << path;
  }
  EXPECT_THROW(Engine(test::fixture("mha-f32"), with_cache(DType::Q8_0)), Error);
}

TEST(KvCacheTypes, DefaultsStayWithinTransformersNativeHalfPrecisionError) {
  // Run as a user would (no options but the budget): gqa-f16 gets an F16 cache and float32
  // products, gqa-bf16 a BF16 cache and BF16 products. Against transformers' own native run of
  // the same checkpoint, which caches in the same types: within test_engine.cpp's tolerances for
  // the float32 engine against that run (0.05, 0.6).
  for (const auto& [name, dtype, native_tolerance] : {std::tuple{"gqa-f16", DType::F16, 0.05}, std::tuple{"gqa-bf16", DType::BF16, 0.6}}) {
    const auto& golden = goldens()[name];
    Engine engine(test::fixture(name), {1ull << 30, 2, true, false});
    EXPECT_EQ(engine.kv_dtype(), dtype);
    const auto prompt = test::golden_prompts(golden)[0];
    const auto logits = prompt_logits(engine, {prompt})[0];
    EXPECT_LT(test::max_logit_difference(logits, golden["native_logits"][0]), native_tolerance) << name;
  }
}

// ---------------------------------------------------------------------------------------------
// Scoring with shared prefixes (parent sequences) on an F16 cache

TEST(HalfCacheScore, SharedPrefixRowsMatchEachChoiceRunAloneAndTheFloat32Cache) {
  const nlohmann::json model = test::load_json(test::fixture("score/goldens.json"))["models"]["stories260K"];
  std::vector<ScoreRow> rows;
  for (const auto& row : model["rows"])
    rows.push_back({row["prefix_ids"].get<std::vector<int>>(), row["choices_ids"].get<std::vector<std::vector<int>>>()});
  Engine half(test::stories_path(), with_cache(DType::F16));
  Engine exact(test::stories_path(), with_cache(DType::F32));
  const auto shared = score_rows(half, rows, {});
  ScoreOptions alone;
  alone.share_prefix = false;
  alone.max_rows_per_batch = 1;
  const auto separate = score_rows(half, rows, alone);
  const auto reference = score_rows(exact, rows, {});
  // A token's log-probability is its logit minus the log-normaliser: two cache tolerances.
  const double per_token = 2 * cache_tolerance(DType::F16);
  double worst = 0;
  for (size_t r = 0; r < rows.size(); r++)
    for (size_t c = 0; c < rows[r].choices.size(); c++) {
      const double tokens = static_cast<double>(rows[r].choices[c].size());
      EXPECT_NEAR(shared[r].choices[c].sum_logprob, reference[r].choices[c].sum_logprob, per_token * tokens) << r << "," << c;
      // Shared or not, the same prefix keys are rounded once; the products differ only in float32
      // summation order (test_score.cpp: 1e-5 per token), which can tip a value to its neighbour
      // in f16 now and then: one cache tolerance per token.
      EXPECT_NEAR(shared[r].choices[c].sum_logprob, separate[r].choices[c].sum_logprob, cache_tolerance(DType::F16) * tokens) << r << "," << c;
      worst = std::max(worst, std::abs(shared[r].choices[c].sum_logprob - reference[r].choices[c].sum_logprob) / tokens);
    }
  EXPECT_GT(worst, 0.0);
  std::printf("[   KV     ] stories260K score, F16 cache: max |log-probability difference| per token %.3g\n", worst);
}

// ---------------------------------------------------------------------------------------------
// The planner

ModelConfig small_config() {
  ModelConfig c = parse_model_config(test::load_json(test::stories_path() + "/config.json"), nullptr, "config.json");
  return c;  // 5 layers, kv_dim 32
}

TEST(HalfCachePlan, KvBytesAreTwoPerValueForHalfCaches) {
  const ModelConfig c = small_config();
  ASSERT_EQ(c.num_layers, 5);
  ASSERT_EQ(c.kv_dim(), 32);
  EXPECT_EQ(kv_cache_bytes(c, 512), 5ull * 2 * 32 * 4 * 512);
  EXPECT_EQ(kv_cache_bytes(c, 512, DType::F32), 5ull * 2 * 32 * 4 * 512);
  EXPECT_EQ(kv_cache_bytes(c, 512, DType::F16), 5ull * 2 * 32 * 2 * 512);
  EXPECT_EQ(kv_cache_bytes(c, 512, DType::BF16), 5ull * 2 * 32 * 2 * 512);
  EXPECT_THROW(kv_cache_bytes(c, 512, DType::Q4_0), Error);
  EXPECT_EQ(kv_cache_bytes(c, uint64_t{1} << 62, DType::F16), kSizeOverflow);

  // A budget between the two minimums: too small for a float32 cache, enough for a half one.
  PlanRequest request;
  request.sequences = 4;
  request.context_tokens = 4096;
  request.prompt_tokens = 4;
  request.threads = 1;
  request.budget_bytes = 1ull << 40;
  const std::vector<uint64_t> units = {0, 1 << 20, 1 << 20, 1 << 20};
  const MemoryPlan f32 = plan_memory(c, units, request);
  request.kv_dtype = DType::F16;
  const MemoryPlan f16 = plan_memory(c, units, request);
  EXPECT_EQ(f32.kv_bytes, 5ull * 2 * 32 * 4 * 4 * 4096);
  EXPECT_EQ(f16.kv_bytes, f32.kv_bytes / 2);
  EXPECT_EQ(f16.kv_dtype, DType::F16);
  EXPECT_EQ(f32.minimum_budget - f16.minimum_budget, f32.kv_bytes / 2);
  request.budget_bytes = f16.minimum_budget;
  EXPECT_NO_THROW(plan_memory(c, units, request));
  request.kv_dtype = DType::F32;
  try {
    plan_memory(c, units, request);
    FAIL() << "a float32 cache fitted a budget made for a half one";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f32 KV cache " + format_size(f32.kv_bytes)), std::string::npos) << e.what();
  }
  EXPECT_NE(describe_plan(f16, {"embed", "a", "b", "c"}).find("KV cache            " + format_size(f16.kv_bytes) + " (f16, 2 bytes a value)"),
            std::string::npos);
}

TEST(HalfCachePlan, TheEnginePlansTheCacheItAllocates) {
  Engine f32(test::fixture("gqa-f16"), with_cache(DType::F32));
  Engine f16(test::fixture("gqa-f16"), {1ull << 30, 2, true, false});
  const RunShape shape{3, 40, 60, false};
  EXPECT_EQ(f16.plan(shape).kv_bytes * 2, f32.plan(shape).kv_bytes);
  EXPECT_EQ(f16.plan(shape).kv_bytes, kv_cache_bytes(f16.config(), 3 * 40, DType::F16));
}

// ---------------------------------------------------------------------------------------------
// The command line

TEST(HalfCacheCli, EveryCommandThatRunsTheModelRefusesABadKvDtypeAsUsage) {
  const std::string model = test::stories_path();
  const std::vector<std::vector<std::string>> commands = {{"generate", "--model", model, "--prompt-ids", "1"},
                                                          {"chat", "--model", model, "--message", "hi"},
                                                          {"score", "--model", model, "--input", "rows.jsonl"},
                                                          {"perplexity", "--model", model, "--text", "story.txt"},
                                                          {"bench", "--model", model},
                                                          {"info", "--model", model}};
  for (auto args : commands)
    for (const char* bad : {"f8", "q8_0", "F16x", ""}) {
      args.insert(args.end(), {"--kv-dtype", bad});
      const auto result = test::layerwise(args);
      EXPECT_EQ(result.exit_code, 2) << args[0] << " " << bad << ": " << result.err;
      EXPECT_NE(result.err.find("--kv-dtype"), std::string::npos) << args[0] << ": " << result.err;
      EXPECT_EQ(result.out, "");
      args.resize(args.size() - 2);
    }
}

TEST(HalfCacheCli, InfoShowsTheCacheTypeAndItsSize) {
  const ModelConfig c = small_config();
  auto result = test::layerwise({"info", "--model", test::stories_path(), "--no-measure"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("kv cache      f32, 4 bytes a value (default: the weights are float32)"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("KV cache            " + format_size(kv_cache_bytes(c, 512)) + " (f32, 4 bytes a value)"), std::string::npos)
      << result.out;
  for (const char* flag : {"f16", "float16", "bf16"}) {
    result = test::layerwise({"info", "--model", test::stories_path(), "--no-measure", "--kv-dtype", flag});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    const std::string name = flag[0] == 'b' ? "bf16" : "f16";
    EXPECT_NE(result.out.find("kv cache      " + name + ", 2 bytes a value (--kv-dtype)"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("KV cache            " + format_size(kv_cache_bytes(c, 512) / 2) + " (" + name + ", 2 bytes a value)"),
              std::string::npos)
        << result.out;
  }
  result = test::layerwise({"info", "--model", test::fixture("gqa-bf16"), "--no-measure"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("kv cache      bf16, 2 bytes a value (default: bfloat16 weights; --kv-dtype f32 for float32)"), std::string::npos)
      << result.out;
}

TEST(HalfCacheCli, GenerateAndScoreRunWithAHalfCacheAndSayWhichOnStderr) {
  const auto reference = test::load_json(test::stories_path() + "/reference/greedy.json")[0]["generated_ids"].get<std::vector<int>>();
  for (const char* flag : {"f32", "f16", "bf16"}) {
    const auto result = test::layerwise({"generate", "--model", test::stories_path(), "--prompt-ids", "1", "--max-new-tokens", "8",
                                         "--output-ids", "--ignore-eos", "--kv-dtype", flag});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(test::parse_ids(result.out).size(), 8u);
    EXPECT_NE(result.err.find(std::string(": ") + flag + ", "), std::string::npos) << result.err;
    if (std::string(flag) == "f32") {
      EXPECT_EQ(test::parse_ids(result.out), std::vector<int>(reference.begin(), reference.begin() + 8));
    }
  }
  test::TempDir dir;
  test::write_file(dir / "rows.jsonl", "{\"id\": 1, \"prefix_ids\": [1, 5, 9], \"choices_ids\": [[10], [11, 12]]}\n");
  const auto scored = test::layerwise({"score", "--model", test::stories_path(), "--input", dir / "rows.jsonl", "--kv-dtype", "f16"});
  ASSERT_EQ(scored.exit_code, 0) << scored.err;
  EXPECT_NE(scored.out.find("\"best_by_sum\""), std::string::npos) << scored.out;
}

}  // namespace
}  // namespace lw
