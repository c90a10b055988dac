#include "plan/plan.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "common/error.h"
#include "common/sizes.h"

namespace lw {
namespace {
// Allocator slack, thread stacks and small bookkeeping that no single buffer accounts for.
constexpr uint64_t kOverheadBytes = 8ull << 20;
}  // namespace

const char* io_mode_name(IoMode mode) {
  switch (mode) {
    case IoMode::Auto: return "auto";
    case IoMode::Cached: return "cached";
    case IoMode::Direct: return "direct";
  }
  return "?";
}

IoMode parse_io_mode(const std::string& text) {
  if (text == "auto") return IoMode::Auto;
  if (text == "cached") return IoMode::Cached;
  if (text == "direct") return IoMode::Direct;
  fail("--io '" + text + "' is not one of auto, cached, direct");
}

const char* kv_dtype_text(DType dtype) {
  switch (dtype) {
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::F32: return "f32";
    default: return dtype_name(dtype);
  }
}

namespace {
void decide_io(MemoryPlan& plan, const PlanRequest& request) {
  if (request.io_mode != IoMode::Auto) {
    plan.direct_io = request.io_mode == IoMode::Direct;
    plan.io_reason = std::string("--io ") + io_mode_name(request.io_mode);
    return;
  }
  // Cached only with a tenth to spare: the rest of the machine's files need the cache too.
  const bool fits = plan.weight_bytes <= request.cache_room_bytes / 10 * 9;
  plan.direct_io = !fits;
  plan.io_reason = format_size(plan.weight_bytes) + " of weights " + (fits ? "fit" : "cannot stay") +
                   " in the page cache beside the budget (" + format_size(request.cache_room_bytes) + " free)";
}
}  // namespace

uint64_t MemoryPlan::total_bytes() const {
  return size_add(size_add(size_add(process_bytes, overhead_bytes), size_add(kv_bytes, activation_bytes)),
                  size_add(resident_bytes, stream_bytes));
}

int MemoryPlan::resident_units() const { return static_cast<int>(std::count(resident.begin(), resident.end(), true)); }

uint64_t kv_cache_bytes(const ModelConfig& c, uint64_t positions, DType kv_dtype) {
  if (kv_dtype != DType::F32 && kv_dtype != DType::F16 && kv_dtype != DType::BF16)
    fail(std::string("a KV cache holds f32, f16 or bf16 values, not ") + dtype_name(kv_dtype));
  return size_mul(2ull * c.num_layers * static_cast<uint64_t>(c.kv_dim()) * dtype_size(kv_dtype), positions);
}

uint64_t activation_bytes(const ModelConfig& c, int tokens, int logit_rows, int threads) {
  const uint64_t per_token = 2ull * c.hidden_size + 2ull * c.q_dim() + 2ull * c.kv_dim() + 2ull * c.intermediate_size +
                             c.hidden_size /* embedding rows as read */;
  const uint64_t widest = static_cast<uint64_t>(std::max({c.hidden_size, c.q_dim(), c.intermediate_size}));
  const uint64_t per_thread = 4 * widest + c.head_dim + 64;  // converted weight rows, attention tile
  return size_mul(sizeof(float), size_add(size_add(size_mul(per_token, static_cast<uint64_t>(tokens)),
                                                     size_mul(static_cast<uint64_t>(logit_rows), static_cast<uint64_t>(c.vocab_size))),
                                            size_mul(per_thread, static_cast<uint64_t>(threads))));
}

MemoryPlan plan_memory(const ModelConfig& config, const std::vector<uint64_t>& unit_bytes, const PlanRequest& request) {
  MemoryPlan plan;
  plan.resident.assign(unit_bytes.size(), false);
  plan.process_bytes = request.process_bytes;
  plan.overhead_bytes = kOverheadBytes;
  plan.kv_dtype = request.kv_dtype;
  plan.kv_bytes = kv_cache_bytes(config,
                                 static_cast<uint64_t>(request.kv_positions > 0 ? request.kv_positions
                                                                                : int64_t{request.sequences} * request.context_tokens),
                                 request.kv_dtype);
  const int min_tokens = request.sequences;
  const int max_tokens = std::max(request.prompt_tokens, min_tokens);
  auto logit_rows = [&](int tokens) {
    if (!request.all_logits) return request.sequences;
    return request.logit_chunk > 0 ? std::min(tokens, request.logit_chunk) : tokens;
  };
  auto activations = [&](int tokens) { return activation_bytes(config, tokens, logit_rows(tokens), request.threads); };
  const uint64_t fixed = size_add(size_add(plan.process_bytes, plan.overhead_bytes), plan.kv_bytes);

  uint64_t largest_unit = 0, all_units = 0;
  for (size_t u = 1; u < unit_bytes.size(); u++) {
    largest_unit = std::max(largest_unit, unit_bytes[u]);
    all_units += unit_bytes[u];
  }
  plan.weight_bytes = all_units;
  decide_io(plan, request);
  plan.minimum_budget = size_add(size_add(fixed, activations(min_tokens)), largest_unit);
  if (request.budget_bytes < plan.minimum_budget) {
    fail("--max-memory " + format_size(request.budget_bytes) + " is too small: this run needs at least " +
         format_size(plan.minimum_budget) + " (the largest layer " + format_size(largest_unit) + ", " + kv_dtype_text(plan.kv_dtype) +
         " KV cache " + format_size(plan.kv_bytes) + ", activations " + format_size(activations(min_tokens)) + ", the process itself " +
         format_size(plan.process_bytes + plan.overhead_bytes) + ")");
  }
  const uint64_t budget = request.budget_bytes;

  // Everything resident, prompt in one sweep: no reading after the first pass.
  if (size_add(size_add(fixed, activations(max_tokens)), all_units) <= budget) {
    plan.tokens_per_sweep = max_tokens;
    plan.activation_bytes = activations(max_tokens);
    for (size_t u = 1; u < unit_bytes.size(); u++) plan.resident[u] = true;
    plan.resident_bytes = all_units;
    return plan;
  }

  // Streaming. Two buffers let the next unit be read while this one computes; one is the
  // fallback when the budget allows no more.
  plan.stream_slots = size_add(plan.minimum_budget, largest_unit) <= budget ? 2 : 1;
  plan.slot_bytes = largest_unit;
  plan.stream_bytes = plan.stream_slots * largest_unit;
  // Prefill chunks: bigger chunks mean fewer sweeps, but layers kept resident save a read on
  // every sweep; give activations at most a quarter of what is left.
  const uint64_t left = budget - fixed - plan.stream_bytes;
  int tokens = max_tokens;
  while (tokens > min_tokens && activations(tokens) > std::max(activations(min_tokens), left / 4))
    tokens = std::max(min_tokens, tokens / 2);
  plan.tokens_per_sweep = tokens;
  plan.activation_bytes = activations(tokens);
  // Keep units resident in sweep order while they fit.
  uint64_t room = budget - fixed - plan.stream_bytes - plan.activation_bytes;
  for (size_t u = 1; u < unit_bytes.size(); u++) {
    if (unit_bytes[u] > room) break;
    plan.resident[u] = true;
    plan.resident_bytes += unit_bytes[u];
    room -= unit_bytes[u];
  }
  for (size_t u = 1; u < unit_bytes.size(); u++)
    if (!plan.resident[u]) plan.streamed_bytes_per_sweep += unit_bytes[u];
  return plan;
}

std::string describe_plan(const MemoryPlan& plan, const std::vector<std::string>& unit_names) {
  std::ostringstream out;
  const int loadable = static_cast<int>(plan.resident.size()) - 1;
  out << "  resident units      " << plan.resident_units() << " of " << loadable << " (" << format_size(plan.resident_bytes)
      << ")";
  if (plan.streams()) {
    out << ", streaming:";
    for (size_t u = 1; u < plan.resident.size(); u++)
      if (!plan.resident[u]) out << " " << unit_names[u];
  }
  out << "\n";
  out << "  streaming buffers   " << plan.stream_slots << " x " << format_size(plan.slot_bytes)
      << (plan.stream_slots >= 2 ? " (reads one unit ahead)" : plan.streams() ? " (no read-ahead: budget too small)" : "")
      << "\n";
  out << "  read per sweep      " << format_size(plan.streamed_bytes_per_sweep) << "\n";
  out << "  reads               " << (plan.direct_io ? "direct, around the page cache" : "through the page cache") << " ("
      << plan.io_reason << ")\n";
  out << "  tokens per sweep    " << plan.tokens_per_sweep << "\n";
  out << "  KV cache            " << format_size(plan.kv_bytes) << " (" << kv_dtype_text(plan.kv_dtype) << ", "
      << dtype_size(plan.kv_dtype) << " bytes a value)\n";
  out << "  activations         " << format_size(plan.activation_bytes) << "\n";
  out << "  process + overhead  " << format_size(plan.process_bytes + plan.overhead_bytes) << "\n";
  out << "  total               " << format_size(plan.total_bytes()) << " (minimum for this request "
      << format_size(plan.minimum_budget) << ")\n";
  return out.str();
}

SweepPrediction predict_decode_sweep(const MemoryPlan& plan, const MeasuredSpeeds& speeds) {
  SweepPrediction prediction;
  if (speeds.read_bytes_per_second > 0)
    prediction.read_seconds = static_cast<double>(plan.streamed_bytes_per_sweep) / speeds.read_bytes_per_second;
  if (speeds.compute_bytes_per_second > 0)
    prediction.compute_seconds = static_cast<double>(plan.weight_bytes) / speeds.compute_bytes_per_second;
  // Two buffers overlap reading and computing; one buffer reads and computes in turn.
  prediction.sweep_seconds = plan.stream_slots >= 2 || !plan.streams()
                                 ? std::max(prediction.read_seconds, prediction.compute_seconds)
                                 : prediction.read_seconds + prediction.compute_seconds;
  return prediction;
}

std::string describe_prediction(const MemoryPlan& plan, const MeasuredSpeeds& speeds) {
  const SweepPrediction p = predict_decode_sweep(plan, speeds);
  char line[512];
  std::snprintf(line, sizeof line,
                "  measured            reads %.2f GB/s, kernels %.2f GB/s of weights (one token)\n"
                "  decode sweep        %.3f s predicted: reading %.3f s, computing %.3f s (%s)\n",
                speeds.read_bytes_per_second / 1e9, speeds.compute_bytes_per_second / 1e9, p.sweep_seconds, p.read_seconds,
                p.compute_seconds, !plan.streams() ? "nothing streamed" : p.io_bound() ? "bound by reading" : "bound by computing");
  return line;
}

}  // namespace lw
