// The attention every kernel level must reproduce, in double precision (tests of the kernels and
// of the KV cache types).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace lw::test {

// Attention of each token over its sequence's positions 0..position in double precision, on the
// values the cache holds. Widening is exact, so only the kernel's float32 arithmetic separates it
// from double precision, as on a float32 cache: test_kernels.cpp's bound for that (2e-6 on
// outputs of values ~N(0, 1)), relative for outputs above 1 (float32 rounds relative to them).
inline void expect_attention_matches(const std::vector<float>& out, const std::vector<float>& q, const std::vector<float>& k,
                              const std::vector<float>& v, const std::vector<int32_t>& positions, const std::vector<int32_t>& sequences,
                              int context, int heads, int kv_heads, int head_dim) {
  const int kv_dim = kv_heads * head_dim, group = heads / kv_heads;
  int wrong = 0;
  for (size_t t = 0; t < positions.size(); t++)
    for (int h = 0; h < heads; h++) {
      const float* query = &q[(t * heads + h) * head_dim];
      const size_t base = static_cast<size_t>(sequences[t]) * context * kv_dim + static_cast<size_t>(h / group * head_dim);
      std::vector<double> scores(static_cast<size_t>(positions[t] + 1));
      double top = -1e300, total = 0;
      for (int p = 0; p <= positions[t]; p++) {
        double s = 0;
        for (int d = 0; d < head_dim; d++) s += static_cast<double>(query[d]) * k[base + static_cast<size_t>(p * kv_dim + d)];
        scores[static_cast<size_t>(p)] = s / std::sqrt(static_cast<double>(head_dim));
        top = std::max(top, scores[static_cast<size_t>(p)]);
      }
      for (double& s : scores) total += s = std::exp(s - top);
      for (int d = 0; d < head_dim; d++) {
        double expected = 0;
        for (int p = 0; p <= positions[t]; p++) expected += scores[static_cast<size_t>(p)] / total * v[base + static_cast<size_t>(p * kv_dim + d)];
        const float got = out[(t * heads + h) * head_dim + d];
        if (!(std::abs(got - expected) <= 2e-6 * std::max(1.0, std::abs(expected))) && wrong++ < 5) ADD_FAILURE() << "token " << t << " head " << h << " d " << d << ": " << got << " vs " << expected;
      }
    }
  EXPECT_EQ(wrong, 0);
}

}  // namespace lw::test
