// What the integrity checks cost on this machine, one thread: XXH3-64 (a split unit is hashed
// against its manifest the first time a run reads it) and the engine's non-finite scan (every
// layer's output and the logits), over a buffer larger than the caches, best of --repeat.
//   build/integrity_bench [--bytes MiB] [--repeat R]
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/engine.h"

namespace {

template <typename Work>
double best_gb_per_s(uint64_t bytes, int repeat, Work work) {
  double best = 0;
  for (int r = 0; r < repeat; r++) {
    const auto start = std::chrono::steady_clock::now();
    work();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(bytes) / seconds / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t mib = 512;
  int repeat = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--bytes")) mib = std::strtoull(argv[i + 1], nullptr, 10);
    else if (!std::strcmp(argv[i], "--repeat")) repeat = std::atoi(argv[i + 1]);
  }
  const size_t floats = mib << 18;
  std::vector<float> values(floats);
  std::mt19937 random(7);
  std::normal_distribution<float> normal;
  for (float& value : values) value = normal(random);
  const uint64_t bytes = floats * sizeof(float);
  volatile uint64_t sink = 0;
  const double hash = best_gb_per_s(bytes, repeat, [&] { sink = sink + XXH3_64bits(values.data(), bytes); });
  const double scan = best_gb_per_s(bytes, repeat, [&] { sink = sink + lw::all_finite(values.data(), floats); });
  std::printf("{\"bytes\": %llu, \"xxh3_gb_per_s\": %.2f, \"finite_scan_gb_per_s\": %.2f}\n",
              static_cast<unsigned long long>(bytes), hash, scan);
  return 0;
}
