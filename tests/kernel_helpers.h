// What the tests of the kernels at each instruction-set level share (test_kernels.cpp,
// test_kv_dtype.cpp): the levels, random inputs, and the backend at a level or a skip.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "common/error.h"

namespace lw::test {

inline const std::vector<std::string> kLevels = {"portable", "avx2", "avx512", "amx"};

// n values ~N(0, scale), the same for the same seed.
inline std::vector<float> random_values(size_t n, uint32_t seed, float scale = 1) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// The backend at `level`, or null when this CPU lacks it (the test then skips, naming the level).
inline std::unique_ptr<Backend> backend_at(const std::string& level, int threads = 2) {
  try {
    return make_cpu_backend(threads, level);
  } catch (const Error&) {
    return nullptr;
  }
}

}  // namespace lw::test

#define BACKEND_OR_SKIP(name, level)                                              \
  auto name = ::lw::test::backend_at(level);                                     \
  if (!name) GTEST_SKIP() << "this CPU cannot run the " << (level) << " kernels"; \
  ASSERT_STREQ(name->kernel_set(), std::string(level).c_str())
