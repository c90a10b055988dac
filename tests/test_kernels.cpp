// The CPU backend's kernels at every instruction-set level this CPU can run (portable, AVX2,
// AVX-512, AMX), each against a plain double-precision computation, on awkward shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "attention_reference.h"
#include "kernel_helpers.h"
#include "backend/backend.h"
#include "common/error.h"
#include "format/dtype.h"

namespace lw {
namespace {

using test::kLevels;
using test::random_values;

struct Matrix {
  std::vector<char> stored;
  std::vector<float> seen;  // the values the kernels see, widened to float32
  WeightView view;
};

Matrix matrix(int rows, int cols, DType dtype, uint32_t seed) {
  Matrix m;
  const std::vector<float> values = random_values(static_cast<size_t>(rows) * cols, seed);
  m.stored.resize(values.size() * dtype_size(dtype));
  convert(values.data(), DType::F32, m.stored.data(), dtype, values.size());
  m.seen.resize(values.size());
  convert_to_f32(m.stored.data(), dtype, values.size(), m.seen.data());
  m.view = {m.stored.data(), dtype, rows, cols};
  return m;
}

class MatmulKernels : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(MatmulKernels, MatchDoublePrecisionOnAwkwardShapes) {
  const auto& [level, dtype] = GetParam();
  BACKEND_OR_SKIP(backend, level);
  // One token (decode), fewer than four, a blocked group of four plus a remainder; one row, a
  // partial block of four rows; one column, columns short of and past a 16-wide vector.
  // From 48 tokens on, the avx2 and higher levels hand float32 products to OpenBLAS in blocks of
  // 128 rows (here with a partial block, both threads at once).
  const std::tuple<int, int, int> shapes[] = {{1, 1, 1},  {1, 37, 70}, {3, 5, 16},   {5, 37, 70},
                                              {9, 4, 129}, {2, 1, 300}, {4, 3, 15}, {70, 300, 33}};
  for (const auto& [tokens, rows, cols] : shapes) {
    SCOPED_TRACE(std::to_string(tokens) + " tokens x " + std::to_string(rows) + " rows x " + std::to_string(cols) + " cols");
    const Matrix w = matrix(rows, cols, dtype, 2);
    const std::vector<float> x = random_values(static_cast<size_t>(tokens) * cols, 1), bias = random_values(static_cast<size_t>(rows), 3);
    const WeightView bias_view{bias.data(), DType::F32, 1, rows};
    std::vector<float> y(static_cast<size_t>(tokens) * rows);
    backend->matmul(y.data(), x.data(), tokens, w.view, &bias_view);
    for (int t = 0; t < tokens; t++)
      for (int r = 0; r < rows; r++) {
        double expected = bias[static_cast<size_t>(r)], magnitude = 0;
        for (int c = 0; c < cols; c++) {
          const double product = static_cast<double>(x[static_cast<size_t>(t * cols + c)]) * w.seen[static_cast<size_t>(r * cols + c)];
          expected += product;
          magnitude += std::abs(product);
        }
        EXPECT_NEAR(y[static_cast<size_t>(t * rows + r)], expected, 2e-7 * magnitude + 1e-6) << "t " << t << " r " << r;
      }
  }
}

TEST_P(MatmulKernels, ResultsDoNotDependOnHowTokensAreGrouped) {
  // A streamed prefill is cut into sweeps of any size: a token's products must come out
  // bit-identical whether it passes alone, in a group of four or in a remainder.
  const auto& [level, dtype] = GetParam();
  BACKEND_OR_SKIP(backend, level);
  const int tokens = 7, rows = 9, cols = 83;
  const Matrix w = matrix(rows, cols, dtype, 5);
  const std::vector<float> x = random_values(static_cast<size_t>(tokens * cols), 4);
  std::vector<float> together(static_cast<size_t>(tokens * rows)), grouped(together.size());
  backend->matmul(together.data(), x.data(), tokens, w.view, nullptr);
  for (const auto& [first, count] : {std::pair{0, 1}, std::pair{1, 5}, std::pair{6, 1}})
    backend->matmul(grouped.data() + first * rows, x.data() + first * cols, count, w.view, nullptr);
  EXPECT_EQ(grouped, together);
}

TEST_P(MatmulKernels, Bf16ComputeMatchesDoublePrecisionOfWhatItRounds) {
  // Compute dtype BF16: from 16 tokens on, AMX tiles (at the amx level) multiply bfloat16-rounded
  // activations and weights, accumulating in float32; other levels stay float32. Token counts
  // that are not multiples of the 32-token tile block, columns not multiples of 32, a partial
  // block of rows.
  const auto& [level, dtype] = GetParam();
  BACKEND_OR_SKIP(backend, level);
  backend->set_compute_dtype(DType::BF16);
  const bool tiles = *backend->matrix_units() != '\0';
  EXPECT_EQ(tiles, level == "amx");
  auto rounded = [&](float v) { return tiles ? bf16_to_f32(f32_to_bf16(v)) : v; };
  for (const auto& [tokens, rows, cols] : {std::tuple{16, 37, 70}, std::tuple{33, 64, 96}, std::tuple{47, 5, 33}}) {
    SCOPED_TRACE(std::to_string(tokens) + "x" + std::to_string(rows) + "x" + std::to_string(cols));
    const Matrix w = matrix(rows, cols, dtype, 2);
    const std::vector<float> x = random_values(static_cast<size_t>(tokens * cols), 1), bias = random_values(static_cast<size_t>(rows), 3);
    std::vector<float> y(static_cast<size_t>(tokens * rows));
    const WeightView bias_view{bias.data(), DType::F32, 1, rows};
    backend->matmul(y.data(), x.data(), tokens, w.view, &bias_view);
    for (int t = 0; t < tokens; t++)
      for (int r = 0; r < rows; r++) {
        double expected = bias[static_cast<size_t>(r)], magnitude = 0;
        for (int c = 0; c < cols; c++) {
          const double product = static_cast<double>(rounded(x[static_cast<size_t>(t * cols + c)])) * rounded(w.seen[static_cast<size_t>(r * cols + c)]);
          expected += product;
          magnitude += std::abs(product);
        }
        // Rounded inputs, float32 sums: exact up to float32 accumulation.
        EXPECT_NEAR(y[static_cast<size_t>(t * rows + r)], expected, 1e-6 * magnitude + 1e-6) << "t " << t << " r " << r;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, MatmulKernels,
                         ::testing::Combine(::testing::ValuesIn(kLevels), ::testing::Values(DType::F32, DType::F16, DType::BF16)),
                         [](const auto& test) { return std::get<0>(test.param) + "_" + dtype_name(std::get<1>(test.param)); });

class LevelKernels : public ::testing::TestWithParam<std::string> {};


TEST_P(LevelKernels, TiledAttentionMatchesAFullSoftmax) {
  BACKEND_OR_SKIP(backend, GetParam());
  // Several 64-key tiles and a partial one; one query, odd query counts per kv head (3 heads of
  // a group), a run of consecutive positions, two sequences interleaved; head_dim 16 and 64.
  for (const auto& [heads, kv_heads, head_dim] : {std::tuple{4, 2, 16}, std::tuple{3, 1, 64}, std::tuple{8, 1, 64}, std::tuple{2, 2, 8}, std::tuple{4, 2, 128}}) {
    SCOPED_TRACE(std::to_string(heads) + " heads, " + std::to_string(kv_heads) + " kv heads, head_dim " + std::to_string(head_dim));
    const int context = 150, kv_dim = kv_heads * head_dim;
    const std::vector<float> k = random_values(static_cast<size_t>(2 * context * kv_dim), 4, 2),
                             v = random_values(static_cast<size_t>(2 * context * kv_dim), 5);
    const std::vector<KvSequence> layout = {{0, 0, context, -1}, {static_cast<size_t>(context * kv_dim), 0, context, -1}};
    const KvLayer cache{const_cast<float*>(k.data()), const_cast<float*>(v.data()), kv_dim, layout.data()};
    for (const auto& [positions, sequences] :
         {std::pair{std::vector<int32_t>{0}, std::vector<int32_t>{1}},
          std::pair{std::vector<int32_t>{0, 63, 64, 149}, std::vector<int32_t>{0, 1, 1, 0}},
          std::pair{std::vector<int32_t>{60, 61, 62, 63, 64, 65, 66}, std::vector<int32_t>{1, 1, 1, 1, 1, 1, 1}}}) {
      const TokenPlacement placement{static_cast<int>(positions.size()), positions.data(), sequences.data()};
      const std::vector<float> q = random_values(positions.size() * heads * head_dim, 6);
      std::vector<float> out(q.size());
      backend->attention(out.data(), q.data(), cache, placement, heads, kv_heads, head_dim);
      test::expect_attention_matches(out, q, k, v, positions, sequences, context, heads, kv_heads, head_dim);
    }
  }
}

TEST_P(LevelKernels, AttentionOfATokenDoesNotDependOnTheOthersInItsPass) {
  BACKEND_OR_SKIP(backend, GetParam());
  const int heads = 8, kv_heads = 2, head_dim = 64, context = 130, kv_dim = kv_heads * head_dim;
  const std::vector<float> k = random_values(static_cast<size_t>(context * kv_dim), 7), v = random_values(k.size(), 8);
  const std::vector<KvSequence> layout = {{0, 0, context, -1}};
  const KvLayer cache{const_cast<float*>(k.data()), const_cast<float*>(v.data()), kv_dim, layout.data()};
  std::vector<int32_t> positions(20), sequences(20, 0);
  for (int t = 0; t < 20; t++) positions[static_cast<size_t>(t)] = 100 + t;
  const std::vector<float> q = random_values(positions.size() * heads * head_dim, 9);
  std::vector<float> together(q.size()), alone(q.size());
  backend->attention(together.data(), q.data(), cache, {20, positions.data(), sequences.data()}, heads, kv_heads, head_dim);
  for (int t = 0; t < 20; t++) {
    const size_t at = static_cast<size_t>(t) * heads * head_dim;
    backend->attention(alone.data() + at, q.data() + at, cache, {1, positions.data() + t, sequences.data() + t}, heads, kv_heads, head_dim);
  }
  EXPECT_EQ(alone, together);
}

TEST_P(LevelKernels, SequencesContinuingASharedPrefixAttendAsIfTheyHeldACopy) {
  // Sequence 0 holds a 100-token prefix; sequences 1 and 2 continue it with their own positions
  // 100.. and read positions 0..99 from sequence 0. Attention must be bit-identical to sequences
  // that hold a private copy of the prefix (same tiles, same order).
  BACKEND_OR_SKIP(backend, GetParam());
  const int heads = 4, kv_heads = 2, head_dim = 16, kv_dim = kv_heads * head_dim, prefix = 100, own = 30;
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

TEST_P(LevelKernels, RmsnormAndSwigluMatchDoublePrecision) {
  BACKEND_OR_SKIP(backend, GetParam());
  for (const int dim : {1, 4, 33, 2048}) {
    SCOPED_TRACE(dim);
    const std::vector<float> x = random_values(static_cast<size_t>(3 * dim), 12, 3), gain = random_values(static_cast<size_t>(dim), 13);
    std::vector<float> y(x.size());
    backend->rmsnorm(y.data(), x.data(), 3, {gain.data(), DType::F32, 1, dim}, 1e-5f);
    for (int t = 0; t < 3; t++) {
      double squares = 0;
      for (int i = 0; i < dim; i++) squares += static_cast<double>(x[static_cast<size_t>(t * dim + i)]) * x[static_cast<size_t>(t * dim + i)];
      const double rms = std::sqrt(squares / dim + 1e-5);
      for (int i = 0; i < dim; i++) {
        const size_t at = static_cast<size_t>(t * dim + i);
        EXPECT_NEAR(y[at], x[at] / rms * gain[static_cast<size_t>(i)], 1e-6 * (1 + std::abs(y[at])));
      }
    }
  }
  // silu over the whole float range the exponential clamps: tiny, ordinary, large, both signs.
  std::vector<float> gate, up;
  for (float g = -120; g <= 120; g += 0.37f) gate.push_back(g), up.push_back(0.5f + std::abs(g) / 100);
  gate.insert(gate.end(), {0.0f, -0.0f, 1e-30f, -1e-30f, 88.5f, -88.5f, 1000.0f, -1000.0f});
  up.insert(up.end(), {1, 1, 1, 1, 1, 1, 1, 1});
  std::vector<float> out(gate);
  backend->swiglu(out.data(), up.data(), out.size());
  for (size_t i = 0; i < gate.size(); i++) {
    const double g = gate[i], expected = g / (1 + std::exp(-g)) * up[i];
    EXPECT_NEAR(out[i], expected, 4e-7 * std::abs(expected) + 1e-30) << "gate " << g;
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, LevelKernels, ::testing::ValuesIn(kLevels), [](const auto& test) { return test.param; });

TEST(KernelLevels, ABadLevelIsRefusedByName) {
  try {
    make_cpu_backend(1, "avx9000");
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown CPU kernel level 'avx9000'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lw
