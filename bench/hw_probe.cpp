// hw_probe: this machine's measured ceilings for the kernels, as one JSON object on stdout.
//
//   build/hw_probe [--threads N] [--bytes SIZE] [--repeat R]
//
// Every figure is the best of R repetitions (default 5), each with N threads (default: every CPU
// this process may run on), none pinned:
//   read_bytes_per_second  each thread sums its share of one large buffer (default 1 GiB, touched
//                          first by the thread that reads it, so the pages exist), with AVX-512 loads
//                          (AVX2, else plain code) into 8 independent accumulators: bytes read / s
//   copy_bytes_per_second  each thread memcpy()s its share of the buffer's first half to its second
//                          half: bytes copied / s (each is read once and written once)
//   fp32_fma_flops         each thread runs 16 independent chains of _mm512_fmadd_ps in registers
//                          (AVX2: 12 chains of 8 lanes; else scalar multiply-adds): 2 x lanes per FMA
//   amx_bf16_flops         where the CPU has AMX-BF16 and the kernel grants the tile state: each
//                          thread loops _tile_dpbf16ps over 4 accumulator tiles with 2 A and 2 B
//                          tiles loaded once; 16 x 16 x 32 x 2 = 16384 FLOPs each. null otherwise
// Progress and notes go to stderr. Standard library and compiler intrinsics only.
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define HW_X86 1
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#define HW_AMX 1
#endif

namespace {

using Clock = std::chrono::steady_clock;

volatile double g_sink = 0;  // every loop's result ends here, so none can be removed

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

void note(const std::string& text) { std::fprintf(stderr, "hw_probe: %s\n", text.c_str()); }

[[noreturn]] void usage_error(const std::string& text) {
  std::fprintf(stderr, "hw_probe: %s\nusage: hw_probe [--threads N] [--bytes SIZE] [--repeat R]\n", text.c_str());
  std::exit(2);
}

// "1GiB", "256MiB", "1.5G" (decimal), "65536".
std::optional<uint64_t> parse_size(const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !(value > 0)) return std::nullopt;
  std::string unit(end);
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 0;
  const std::pair<const char*, double> units[] = {{"", 1},         {"b", 1},         {"k", 1e3},      {"kb", 1e3},
                                                  {"m", 1e6},      {"mb", 1e6},      {"g", 1e9},      {"gb", 1e9},
                                                  {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}};
  for (const auto& [name, factor] : units)
    if (unit == name) scale = factor;
  if (scale == 0) return std::nullopt;
  return static_cast<uint64_t>(value * scale);
}

int usable_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) {
        auto start = line.find_first_not_of(" \t", colon + 1);
        return start == std::string::npos ? "" : line.substr(start);
      }
    }
  }
  return "unknown";
}

// Size of the largest cache (normally L3) cpu0 reports in sysfs; 0 when unknown.
uint64_t largest_cache_bytes() {
  uint64_t largest = 0;
  for (int index = 0; index < 16; index++) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    std::string text;
    if (!(in >> text)) continue;
    if (auto size = parse_size(text.back() == 'K' || text.back() == 'M' ? text + "iB" : text)) largest = std::max(largest, *size);
  }
  return largest;
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else out += c;
  }
  return out + "\"";
}

std::string json_number(std::optional<double> value) {
  if (!value || !std::isfinite(*value)) return "null";
  char text[64];
  std::snprintf(text, sizeof text, "%.6g", *value);
  return text;
}

// Runs work(thread) on `threads` fresh threads and returns the seconds from the moment all of
// them are ready to the moment the last one is done (thread start-up is not timed).
double run_parallel(int threads, const std::function<void(int)>& work) {
  std::barrier sync(threads + 1);
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; t++)
    pool.emplace_back([&, t] {
      sync.arrive_and_wait();
      work(t);
      sync.arrive_and_wait();
    });
  sync.arrive_and_wait();
  const auto start = Clock::now();
  sync.arrive_and_wait();
  const double seconds = seconds_since(start);
  for (auto& thread : pool) thread.join();
  return seconds;
}

// Thread t's share [begin, end) of n items, in multiples of `align` items.
std::pair<size_t, size_t> share(size_t n, int threads, int t, size_t align) {
  const size_t blocks = n / align;
  const size_t begin = blocks * static_cast<size_t>(t) / static_cast<size_t>(threads);
  const size_t end = blocks * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
  return {begin * align, end * align};
}

struct Measurement {
  double best = 0;               // the highest rate of the repetitions
  std::vector<double> rates;     // every repetition's
  double seconds_per_repetition = 0;
};

// Calibrates `amount` (units of work per thread) so one repetition takes about target_s, then runs
// the repetitions. run(amount) returns seconds; rate = units(amount) / seconds.
Measurement measure(int repeat, double target_s, uint64_t amount, uint64_t max_amount,
                    const std::function<double(uint64_t)>& run, const std::function<double(uint64_t)>& units) {
  double seconds = run(amount);  // warm-up (caches, frequency, the first-touch of anything lazy)
  while (seconds < target_s / 4 && amount < max_amount) {
    amount = std::min(max_amount, amount * 2);
    seconds = run(amount);
  }
  if (seconds < target_s && amount < max_amount)
    amount = std::min<uint64_t>(max_amount, static_cast<uint64_t>(static_cast<double>(amount) * target_s / seconds) + 1);
  Measurement m;
  double total = 0;
  for (int r = 0; r < repeat; r++) {
    const double s = run(amount);
    total += s;
    m.rates.push_back(units(amount) / s);
    m.best = std::max(m.best, m.rates.back());
  }
  m.seconds_per_repetition = total / repeat;
  return m;
}

// ----------------------------------------------------------------------------- the ISA

struct Isa {
  bool avx512f = false, avx2 = false, fma = false, amx_cpu = false;
};

Isa detect_isa() {
  Isa isa;
#if HW_X86
  __builtin_cpu_init();
  isa.avx512f = __builtin_cpu_supports("avx512f");
  isa.avx2 = __builtin_cpu_supports("avx2");
  isa.fma = __builtin_cpu_supports("fma");
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) isa.amx_cpu = (d & (1u << 22)) && (d & (1u << 24));
#endif
  return isa;
}

// ----------------------------------------------------------------------------- read

#if HW_X86
// Not _mm512_reduce_add_ps: GCC 12's version trips -Wuninitialized inside its own header.
__attribute__((target("avx512f"))) double lanes_sum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  double total = 0;
  for (float x : lanes) total += static_cast<double>(x);
  return total;
}

__attribute__((target("avx512f"))) double sum_avx512(const float* p, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  for (size_t i = 0; i + 128 <= n; i += 128) {
    s0 = _mm512_add_ps(s0, _mm512_load_ps(p + i));
    s1 = _mm512_add_ps(s1, _mm512_load_ps(p + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_load_ps(p + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_load_ps(p + i + 48));
    s4 = _mm512_add_ps(s4, _mm512_load_ps(p + i + 64));
    s5 = _mm512_add_ps(s5, _mm512_load_ps(p + i + 80));
    s6 = _mm512_add_ps(s6, _mm512_load_ps(p + i + 96));
    s7 = _mm512_add_ps(s7, _mm512_load_ps(p + i + 112));
  }
  s0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)),
                     _mm512_add_ps(_mm512_add_ps(s4, s5), _mm512_add_ps(s6, s7)));
  return lanes_sum(s0);
}

__attribute__((target("avx2"))) double sum_avx2(const float* p, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  for (size_t i = 0; i + 64 <= n; i += 64) {
    s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
    s4 = _mm256_add_ps(s4, _mm256_load_ps(p + i + 32));
    s5 = _mm256_add_ps(s5, _mm256_load_ps(p + i + 40));
    s6 = _mm256_add_ps(s6, _mm256_load_ps(p + i + 48));
    s7 = _mm256_add_ps(s7, _mm256_load_ps(p + i + 56));
  }
  s0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)),
                     _mm256_add_ps(_mm256_add_ps(s4, s5), _mm256_add_ps(s6, s7)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s0);
  double total = 0;
  for (float v : lanes) total += static_cast<double>(v);
  return total;
}
#endif

double sum_plain(const float* p, size_t n) {
  float s[8] = {};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += p[i + static_cast<size_t>(j)];
  double total = 0;
  for (float v : s) total += static_cast<double>(v);
  return total;
}

// ----------------------------------------------------------------------------- FP32 FMA

constexpr int kChains512 = 16, kChains256 = 12, kChainsScalar = 8;

#if HW_X86
__attribute__((target("avx512f"))) double fma_avx512(uint64_t iterations) {
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
  __m512 acc[kChains512];
  for (int j = 0; j < kChains512; j++) acc[j] = _mm512_set1_ps(static_cast<float>(j));
  for (uint64_t i = 0; i < iterations; i++) {
#pragma GCC unroll 16
    for (int j = 0; j < kChains512; j++) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
  }
  __m512 total = acc[0];
  for (int j = 1; j < kChains512; j++) total = _mm512_add_ps(total, acc[j]);
  return lanes_sum(total);
}

__attribute__((target("avx2,fma"))) double fma_avx2(uint64_t iterations) {
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
  __m256 acc[kChains256];
  for (int j = 0; j < kChains256; j++) acc[j] = _mm256_set1_ps(static_cast<float>(j));
  for (uint64_t i = 0; i < iterations; i++) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains256; j++) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
  }
  __m256 total = acc[0];
  for (int j = 1; j < kChains256; j++) total = _mm256_add_ps(total, acc[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  double sum = 0;
  for (float v : lanes) sum += static_cast<double>(v);
  return sum;
}
#endif

double fma_scalar(uint64_t iterations) {
  float acc[kChainsScalar];
  for (int j = 0; j < kChainsScalar; j++) acc[j] = static_cast<float>(j);
  const float a = 0.999999f, b = 1e-6f;
  for (uint64_t i = 0; i < iterations; i++) {
#pragma GCC unroll 8
    for (int j = 0; j < kChainsScalar; j++) acc[j] = acc[j] * a + b;
  }
  double total = 0;
  for (float v : acc) total += static_cast<double>(v);
  return total;
}

// ----------------------------------------------------------------------------- AMX BF16

#if HW_AMX
constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
constexpr double kFlopsPerTdp = 16.0 * 16.0 * 32.0 * 2.0;  // 16x32 bf16 A times 32x16 B into 16x16 fp32
constexpr int kTdpPerIteration = 4;

struct TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

__attribute__((target("amx-tile,amx-bf16"))) double amx_loop(uint64_t iterations) {
  TileConfig config;
  for (int i = 0; i < 8; i++) config.rows[i] = 16, config.bytes_per_row[i] = 64;
  alignas(64) uint16_t a[2][16 * 32], b[2][16 * 32];
  for (int i = 0; i < 16 * 32; i++) {
    // Small bf16 values (1/256 and 1/512: 0x3b80, 0x3b00), so the sums stay finite.
    a[0][i] = 0x3b80, a[1][i] = 0x3b00, b[0][i] = 0x3b00, b[1][i] = 0x3b80;
  }
  alignas(64) float c[4][16 * 16];
  _tile_loadconfig(&config);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, a[0], 64);
  _tile_loadd(5, a[1], 64);
  _tile_loadd(6, b[0], 64);
  _tile_loadd(7, b[1], 64);
  for (uint64_t i = 0; i < iterations; i++) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c[0], 64);
  _tile_stored(1, c[1], 64);
  _tile_stored(2, c[2], 64);
  _tile_stored(3, c[3], 64);
  _tile_release();
  return static_cast<double>(c[0][0] + c[1][17] + c[2][34] + c[3][255]);
}

// False, with the reason in *why, when the CPU has no AMX-BF16 or the kernel refuses the state.
bool amx_permitted(const Isa& isa, std::string* why) {
  if (!isa.amx_cpu) {
    *why = "the CPU has no AMX-BF16 and AMX-TILE (cpuid leaf 7 EDX bits 22, 24)";
    return false;
  }
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    *why = std::string("the kernel refused the tile state (arch_prctl ARCH_REQ_XCOMP_PERM): ") + std::strerror(errno);
    return false;
  }
  return true;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  int threads = usable_cpus(), repeat = 5;
  uint64_t bytes = 1ull << 30;
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--threads") {
      const std::string text = value();
      threads = std::atoi(text.c_str());
      if (threads < 1 || threads > 4096) usage_error("--threads must be 1 to 4096, not '" + text + "'");
    } else if (arg == "--bytes") {
      const std::string text = value();
      auto size = parse_size(text);
      if (!size || *size < (1u << 20)) usage_error("--bytes must be a size of at least 1MiB, not '" + text + "'");
      bytes = *size;
    } else if (arg == "--repeat") {
      const std::string text = value();
      repeat = std::atoi(text.c_str());
      if (repeat < 1 || repeat > 1000) usage_error("--repeat must be 1 to 1000, not '" + text + "'");
    } else if (arg == "--help" || arg == "-h") {
      std::printf("usage: hw_probe [--threads N] [--bytes SIZE] [--repeat R]\n"
                  "Prints this machine's read and copy bandwidth and peak FP32 FMA and AMX BF16 FLOP/s as JSON,\n"
                  "each the best of R repetitions (default 5) with N threads (default: all usable CPUs);\n"
                  "--bytes is the buffer the bandwidths stream through (default 1GiB).\n");
      return 0;
    } else {
      usage_error("unknown argument '" + arg + "'");
    }
  }
  const auto started = Clock::now();
  const Isa isa = detect_isa();
  const double target_s = 0.06;  // one repetition; 5 of them plus calibration is ~0.3-0.5 s per figure

  // ---- bandwidth: one buffer, 2 MiB aligned (huge pages where the kernel gives them)
  const size_t align_items = 2048;  // 8 KiB of floats per share boundary: whole lines, whole SIMD blocks
  bytes = std::max<uint64_t>(bytes / (align_items * 4 * static_cast<uint64_t>(threads)) * align_items * 4 *
                                 static_cast<uint64_t>(threads),
                             align_items * 4 * static_cast<uint64_t>(threads));
  void* mapped = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) {
    std::fprintf(stderr, "hw_probe: cannot map %llu bytes: %s\n", static_cast<unsigned long long>(bytes), std::strerror(errno));
    return 1;
  }
#ifdef MADV_HUGEPAGE
  madvise(mapped, bytes, MADV_HUGEPAGE);
#endif
  float* buffer = static_cast<float*>(mapped);
  const size_t items = bytes / sizeof(float);
  // Each thread touches the share it will read (first touch places the pages near it).
  run_parallel(threads, [&](int t) {
    auto [begin, end] = share(items, threads, t, align_items);
    for (size_t i = begin; i < end; i++) buffer[i] = static_cast<float>(i & 1023) * (1.0f / 1024.0f);
  });

  const uint64_t cache_bytes = largest_cache_bytes();
  std::string bandwidth_note;
  if (cache_bytes && bytes < 2 * cache_bytes)
    bandwidth_note = "the buffer is less than twice the largest CPU cache (" + std::to_string(cache_bytes >> 20) +
                     " MiB): the bandwidths may be partly cache bandwidth";
  if (!bandwidth_note.empty()) note(bandwidth_note);

  const char* read_isa = "plain";
  double (*sum)(const float*, size_t) = sum_plain;
#if HW_X86
  if (isa.avx512f) sum = sum_avx512, read_isa = "avx512f";
  else if (isa.avx2) sum = sum_avx2, read_isa = "avx2";
#endif
  note("read bandwidth: " + std::to_string(threads) + " threads, " + std::to_string(bytes >> 20) + " MiB, " + read_isa);
  const Measurement read = measure(
      repeat, target_s, 1, 64,
      [&](uint64_t passes) {
        std::vector<double> partial(static_cast<size_t>(threads));
        const double s = run_parallel(threads, [&](int t) {
          auto [begin, end] = share(items, threads, t, align_items);
          double total = 0;
          for (uint64_t p = 0; p < passes; p++) total += sum(buffer + begin, end - begin);
          partial[static_cast<size_t>(t)] = total;
        });
        for (double v : partial) g_sink = g_sink + v;
        return s;
      },
      [&](uint64_t passes) { return static_cast<double>(bytes) * static_cast<double>(passes); });

  note("copy bandwidth: memcpy of " + std::to_string(bytes >> 21) + " MiB");
  const size_t half = items / 2;
  const Measurement copy = measure(
      repeat, target_s, 1, 64,
      [&](uint64_t passes) {
        const double s = run_parallel(threads, [&](int t) {
          auto [begin, end] = share(half, threads, t, align_items / 2);
          for (uint64_t p = 0; p < passes; p++)
            std::memcpy(buffer + half + begin, buffer + begin, (end - begin) * sizeof(float));
        });
        g_sink = g_sink + static_cast<double>(buffer[half + 1]);
        return s;
      },
      [&](uint64_t passes) { return static_cast<double>(half * sizeof(float)) * static_cast<double>(passes); });
  munmap(mapped, bytes);

  // ---- FP32 FMA peak
  const char* fma_isa = "scalar";
  int lanes = 1, chains = kChainsScalar;
  double (*fma_loop)(uint64_t) = fma_scalar;
#if HW_X86
  if (isa.avx512f) fma_loop = fma_avx512, fma_isa = "avx512f", lanes = 16, chains = kChains512;
  else if (isa.avx2 && isa.fma) fma_loop = fma_avx2, fma_isa = "avx2+fma", lanes = 8, chains = kChains256;
#endif
  note(std::string("fp32 fma peak: ") + fma_isa + ", " + std::to_string(chains) + " chains of " + std::to_string(lanes) +
       " lanes");
  const double flops_per_iteration = 2.0 * lanes * chains;
  const Measurement fma = measure(
      repeat, target_s, 1 << 16, 1ull << 40,
      [&](uint64_t iterations) {
        std::vector<double> partial(static_cast<size_t>(threads));
        const double s = run_parallel(threads, [&](int t) { partial[static_cast<size_t>(t)] = fma_loop(iterations); });
        for (double v : partial) g_sink = g_sink + v;
        return s;
      },
      [&](uint64_t iterations) { return flops_per_iteration * static_cast<double>(iterations) * threads; });

  // ---- AMX BF16 peak
  std::optional<Measurement> amx;
  std::string amx_note;
#if HW_AMX
  if (amx_permitted(isa, &amx_note)) {
    note("amx bf16 peak: 4 accumulator tiles, tdpbf16ps");
    amx = measure(
        repeat, target_s, 1 << 12, 1ull << 40,
        [&](uint64_t iterations) {
          std::vector<double> partial(static_cast<size_t>(threads));
          const double s = run_parallel(threads, [&](int t) { partial[static_cast<size_t>(t)] = amx_loop(iterations); });
          for (double v : partial) g_sink = g_sink + v;
          return s;
        },
        [&](uint64_t iterations) {
          return kFlopsPerTdp * kTdpPerIteration * static_cast<double>(iterations) * threads;
        });
  } else {
    note("amx bf16 peak: not measured: " + amx_note);
  }
#else
  amx_note = "not an x86-64 Linux build";
#endif

  auto rates = [](const Measurement& m) {
    std::string out = "[";
    for (size_t i = 0; i < m.rates.size(); i++) out += (i ? ", " : "") + json_number(m.rates[i]);
    return out + "]";
  };
  std::printf("{\n");
  std::printf("  \"cpu\": %s,\n", json_string(cpu_model()).c_str());
  std::printf("  \"threads\": %d,\n", threads);
  std::printf("  \"repetitions\": %d,\n", repeat);
  std::printf("  \"isa\": {\"avx512f\": %s, \"avx2\": %s, \"fma\": %s, \"amx\": %s},\n", isa.avx512f ? "true" : "false",
              isa.avx2 ? "true" : "false", isa.fma ? "true" : "false", amx ? "true" : "false");
  std::printf("  \"buffer_bytes\": %llu,\n", static_cast<unsigned long long>(bytes));
  std::printf("  \"largest_cache_bytes\": %llu,\n", static_cast<unsigned long long>(cache_bytes));
  std::printf("  \"bandwidth_note\": %s,\n", bandwidth_note.empty() ? "null" : json_string(bandwidth_note).c_str());
  std::printf("  \"read_isa\": \"%s\",\n", read_isa);
  std::printf("  \"read_bytes_per_second\": %s,\n", json_number(read.best).c_str());
  std::printf("  \"read_samples\": %s,\n", rates(read).c_str());
  std::printf("  \"copy_bytes_per_second\": %s,\n", json_number(copy.best).c_str());
  std::printf("  \"copy_samples\": %s,\n", rates(copy).c_str());
  std::printf("  \"fp32_fma_isa\": \"%s\",\n", fma_isa);
  std::printf("  \"fp32_fma_flops\": %s,\n", json_number(fma.best).c_str());
  std::printf("  \"fp32_fma_samples\": %s,\n", rates(fma).c_str());
  std::printf("  \"amx_bf16_flops\": %s,\n", amx ? json_number(amx->best).c_str() : "null");
  std::printf("  \"amx_bf16_samples\": %s,\n", amx ? rates(*amx).c_str() : "null");
  std::printf("  \"amx_note\": %s,\n", amx ? "null" : json_string(amx_note).c_str());
  std::printf("  \"seconds\": %s\n", json_number(seconds_since(started)).c_str());
  std::printf("}\n");
  return 0;
}
