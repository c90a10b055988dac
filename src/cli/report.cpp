// What a run tells the user on stderr about its reading, computing and memory.
#include <algorithm>
#include <cstdio>

#include "cli/commands.h"
#include "common/sizes.h"

namespace lw::cli {

std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f s", seconds);
  return text;
}

void print_memory_stats(const Engine& engine) {
  const MemoryPlan& plan = engine.active_plan();
  std::fprintf(stderr, "memory    budget %s; plan %s (%d of %zu layers resident); peak RSS %s\n",
               format_size(engine.budget_bytes()).c_str(), format_size(plan.total_bytes()).c_str(), plan.resident_units(),
               plan.resident.empty() ? size_t{0} : plan.resident.size() - 1, format_size(engine.stats().peak_rss_bytes).c_str());
  std::fprintf(stderr, "kv cache  %s: %s\n", format_size(plan.kv_bytes).c_str(), kv_description(engine).c_str());
}

namespace {

double rate_gb(uint64_t bytes, double seconds) { return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0; }

void print_profile(const Engine& engine, const EngineStats& stats) {
  std::fprintf(stderr, "profile   sweep  tokens   seconds   compute    waited   read MiB    read s\n");
  for (size_t i = 0; i < stats.sweep_log.size(); i++) {
    const SweepRecord& s = stats.sweep_log[i];
    std::fprintf(stderr, "profile   %5zu  %6d  %8.4f  %8.4f  %8.4f  %9.2f  %8.4f\n", i + 1, s.tokens, s.seconds, s.compute_seconds(),
                 s.wait_seconds, static_cast<double>(s.bytes_read) / (1 << 20), s.read_seconds);
  }
  std::fprintf(stderr, "profile   unit        loads   read MiB    read s    GB/s    waited   compute\n");
  const auto& units = engine.checkpoint().units;
  const StreamStats& stream = stats.stream;
  for (size_t u = 1; u < units.size() && u < stream.loads_per_unit.size(); u++) {
    const double compute = u < stats.compute_seconds_per_unit.size() ? stats.compute_seconds_per_unit[u] : 0;
    std::fprintf(stderr, "profile   %-10s %6llu  %9.2f  %8.4f  %6.2f  %8.4f  %8.4f\n", units[u].recipe.name.c_str(),
                 static_cast<unsigned long long>(stream.loads_per_unit[u]), static_cast<double>(stream.bytes_per_unit[u]) / (1 << 20),
                 stream.read_seconds_per_unit[u], rate_gb(stream.bytes_per_unit[u], stream.read_seconds_per_unit[u]),
                 stream.wait_seconds_per_unit[u], compute);
  }
}

// Decode sweeps (one token per sequence, after the first sweep, which also loads the resident
// layers): their mean, and whether reading or computing sets their pace.
void print_decode_sweeps(const Engine& engine, const EngineStats& stats, int sequences) {
  SweepRecord total;
  int count = 0;
  double per_token = 0;  // compute seconds per token where many tokens passed (compute-bound)
  for (size_t i = 0; i < stats.sweep_log.size(); i++) {
    const SweepRecord& s = stats.sweep_log[i];
    if (s.tokens >= 16) {
      const double cost = s.compute_seconds() / s.tokens;
      per_token = per_token > 0 ? std::min(per_token, cost) : cost;
    }
    if (i == 0 || s.tokens > sequences) continue;
    total.tokens += s.tokens;
    total.seconds += s.seconds;
    total.wait_seconds += s.wait_seconds;
    total.read_seconds += s.read_seconds;
    total.bytes_read += s.bytes_read;
    count++;
  }
  if (count == 0) return;
  const double n = count, seconds = total.seconds / n, waited = total.wait_seconds / n, compute = total.compute_seconds() / n,
               read = total.read_seconds / n;
  const auto bytes = static_cast<uint64_t>(static_cast<double>(total.bytes_read) / n);
  std::fprintf(stderr, "per sweep %d decode sweeps (%.3g tokens each): %s = computing %s + waiting for reads %s; read %s in %s (%.2f GB/s)\n",
               count, total.tokens / n, seconds_text(seconds).c_str(), seconds_text(compute).c_str(), seconds_text(waited).c_str(),
               format_size(bytes).c_str(), seconds_text(read).c_str(), rate_gb(bytes, read));
  if (bytes == 0) {
    std::fprintf(stderr, "bound     by computing: every layer is resident, nothing is read\n");
  } else if (waited > 0.1 * seconds) {
    // Extra sequences cost compute, not reads, until their compute fills the time spent waiting.
    if (per_token <= 0) per_token = compute / (total.tokens / n);
    const int free_by_time = per_token > 0 ? static_cast<int>(waited / per_token) : 0;
    const int free_by_memory = engine.spare_sequences(std::max(free_by_time, 1));
    std::string riders;
    if (free_by_time > 0)
      riders = "; about " + std::to_string(free_by_time) + " more sequences would ride along at no extra time" +
               (free_by_memory >= free_by_time ? " (the budget has room for them)"
                                               : " (the budget has room for " + std::to_string(free_by_memory) + ")");
    std::fprintf(stderr, "bound     by reading: %.0f%% of each sweep waits for the disk%s\n", 100 * waited / seconds, riders.c_str());
  } else {
    std::fprintf(stderr, "bound     by computing: reading (%s per sweep) is hidden behind computing (%s)\n", seconds_text(read).c_str(),
                 seconds_text(compute).c_str());
  }
}

}  // namespace

void print_stream_report(const Engine& engine, int sequences, bool profile) {
  const EngineStats stats = engine.stats();
  const StreamStats& stream = stats.stream;
  const double hidden = stream.read_seconds > 0 ? 100.0 * (1.0 - std::min(1.0, stream.wait_seconds / stream.read_seconds)) : 100.0;
  std::fprintf(stderr, "sweeps    %d in %s; layer loads %llu; read %s in %s (%.2f GB/s); waited for reads %s (%.0f%% of reading hidden)\n",
               stats.sweeps, seconds_text(stats.sweep_seconds).c_str(), static_cast<unsigned long long>(stream.unit_loads),
               format_size(stream.bytes_read).c_str(), seconds_text(stream.read_seconds).c_str(),
               rate_gb(stream.bytes_read, stream.read_seconds), seconds_text(stream.wait_seconds).c_str(), hidden);
  std::fprintf(stderr, "reads     %s; %s\n", engine.io_description().c_str(), engine.active_plan().io_reason.c_str());
  if (stream.bytes_verified > 0)
    std::fprintf(stderr, "checksums %s of split files matched their manifest in %s (%.2f GB/s; each file once, at its first read)\n",
                 format_size(stream.bytes_verified).c_str(), seconds_text(stream.verify_seconds).c_str(),
                 rate_gb(stream.bytes_verified, stream.verify_seconds));
  if (sequences > 0) print_decode_sweeps(engine, stats, sequences);
  print_memory_stats(engine);
  if (profile) print_profile(engine, stats);
}

}  // namespace lw::cli
