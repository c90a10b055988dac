// Throughput of the integer block products (src/backend/quant_kernels.h) on one thread: a
// matrix-vector product of rows x cols block-typed weights (default 4096 x 4096) for every block
// type and every instruction-set level this CPU runs, as one JSON line each:
//   {"level": "avx2", "type": "Q4_K", "rows": 4096, "cols": 4096, "bytes": ..., "seconds": ...,
//    "gb_per_s": ..., "hot_gb_per_s": ...}
// gb_per_s: weight bytes per second over the whole matrix (larger than the caches: DRAM-bound
// where the kernel is fast enough); hot_gb_per_s: the same on 64 rows that stay in L2 (the
// kernel's own speed). A first line "read" times summing the bytes of a matrix as 64-bit words,
// for comparison under the same conditions. Usage: quant_dot_bench [rows] [cols] [repeats]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu_kernels.h"
#include "backend/quant_kernels.h"
#include "format/dtype.h"

namespace {

using namespace lw;

// Random bytes with float16 scales in 1e-4 .. 0.05 at the fields every block type keeps them.
std::vector<uint8_t> random_matrix(DType t, int64_t rows, int64_t cols) {
  const DTypeFormat& f = dtype_format(t);
  std::mt19937 gen(42);
  std::vector<uint8_t> m(dtype_row_bytes(t, static_cast<uint64_t>(cols)) * static_cast<uint64_t>(rows));
  for (uint8_t& b : m) b = static_cast<uint8_t>(gen());
  std::vector<int> fields;
  switch (t) {
    case DType::Q2_K: fields = {80, 82}; break;
    case DType::Q3_K: fields = {108}; break;
    case DType::Q6_K: fields = {208}; break;
    case DType::Q4_1: case DType::Q5_1: case DType::Q4_K: case DType::Q5_K: fields = {0, 2}; break;
    default: fields = {0}; break;
  }
  std::uniform_real_distribution<float> scale(1e-4f, 0.05f);
  for (size_t block = 0; block < m.size() / f.block_bytes; block++)
    for (int offset : fields) {
      const uint16_t bits = f32_to_f16(scale(gen));
      std::memcpy(m.data() + block * f.block_bytes + offset, &bits, 2);
    }
  return m;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Best of `repeats` passes over `rows` rows; returns seconds per pass.
double time_rows(float (*dot)(const void*, const cpu::QuantizedActivations&, int64_t), const uint8_t* m, uint64_t row_bytes,
                 int64_t rows, int64_t cols, const cpu::QuantizedActivations& x, int repeats, std::vector<float>& out) {
  double best = 1e30;
  for (int r = 0; r < repeats; r++) {
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < rows; i++) out[static_cast<size_t>(i)] = dot(m + static_cast<uint64_t>(i) * row_bytes, x, cols);
    best = std::min(best, seconds_since(start));
  }
  return best;
}

// Best of `repeats` sums of the first `bytes` of m as 64-bit words: what reading costs here, now.
double time_read(const uint8_t* m, size_t bytes, int repeats, uint64_t& sink) {
  double best = 1e30;
  for (int r = 0; r < repeats; r++) {
    const auto start = std::chrono::steady_clock::now();
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 32 <= bytes; i += 32) {
      uint64_t w[4];
      std::memcpy(w, m + i, 32);
      s0 += w[0], s1 += w[1], s2 += w[2], s3 += w[3];
    }
    sink += s0 + s1 + s2 + s3;
    best = std::min(best, seconds_since(start));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 4096, cols = argc > 2 ? std::atoll(argv[2]) : 4096;
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 5;
  if (rows <= 0 || cols <= 0 || cols % 256 != 0 || repeats <= 0) {
    std::fprintf(stderr, "usage: quant_dot_bench [rows] [cols, a multiple of 256] [repeats]\n");
    return 2;
  }
  std::vector<float> activations(static_cast<size_t>(cols));
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0, 1);
  for (float& v : activations) v = normal(gen);
  std::vector<int8_t> q(static_cast<size_t>(cols));
  std::vector<float> scales(static_cast<size_t>(cols / 32));
  std::vector<int32_t> sums(static_cast<size_t>(cols / 16));
  std::vector<float> out(static_cast<size_t>(rows));
  const DType types[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K,
                         DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS};
  const cpu::Level best = cpu::detect_level();
  {  // the machine's read speed under the same conditions, for comparison (Q8_0's matrix size)
    const std::vector<uint8_t> m = random_matrix(DType::Q8_0, rows, cols);
    uint64_t sink = 0;
    const double whole = time_read(m.data(), m.size(), repeats, sink);
    const size_t hot_bytes = m.size() / static_cast<size_t>(rows) * static_cast<size_t>(std::min<int64_t>(rows, 64));
    const double hot = time_read(m.data(), hot_bytes, 20 * repeats, sink);
    std::printf("{\"level\": \"read\", \"type\": \"u64 sum\", \"bytes\": %zu, \"gb_per_s\": %.2f, \"hot_gb_per_s\": %.2f, \"sink\": %llu}\n",
                m.size(), static_cast<double>(m.size()) / whole / 1e9, static_cast<double>(hot_bytes) / hot / 1e9,
                static_cast<unsigned long long>(sink % 10));
  }
  for (DType t : types) {
    const std::vector<uint8_t> m = random_matrix(t, rows, cols);
    const uint64_t row_bytes = dtype_row_bytes(t, static_cast<uint64_t>(cols));
    for (cpu::Level level : {cpu::Level::Portable, cpu::Level::Avx2, cpu::Level::Avx512}) {
      if (level > best) continue;
      const cpu::QuantKernels& k = cpu::quant_kernels(level);
      const auto dot = k.dot[static_cast<int>(t)];
      if (!dot) continue;
      k.quantize(activations.data(), cols, q.data(), scales.data(), sums.data());
      const cpu::QuantizedActivations x{q.data(), scales.data(), sums.data()};
      const int pass_repeats = level == cpu::Level::Portable ? std::max(1, repeats / 2) : repeats;
      const double whole = time_rows(dot, m.data(), row_bytes, rows, cols, x, pass_repeats, out);
      const int64_t hot_rows = std::min<int64_t>(rows, 64);
      const double hot = time_rows(dot, m.data(), row_bytes, hot_rows, cols, x, 20 * pass_repeats, out);
      const double bytes = static_cast<double>(row_bytes) * static_cast<double>(rows);
      std::printf("{\"level\": \"%s\", \"type\": \"%s\", \"rows\": %lld, \"cols\": %lld, \"bytes\": %.0f, \"seconds\": %.6f, "
                  "\"gb_per_s\": %.2f, \"hot_gb_per_s\": %.2f}\n",
                  cpu::level_name(level), dtype_name(t), static_cast<long long>(rows), static_cast<long long>(cols), bytes, whole,
                  bytes / whole / 1e9, static_cast<double>(row_bytes) * static_cast<double>(hot_rows) / hot / 1e9);
      std::fflush(stdout);
    }
  }
  return 0;
}
