// Turns a memory budget into a plan: which units stay resident, how many buffers stream the
// rest (one computing while the next is read), how many tokens pass a layer per sweep, and the
// KV cache. Everything the engine holds is in the plan, including the process itself.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "format/dtype.h"
#include "model/config.h"

namespace lw {

// Whether weights are read through the page cache or around it (O_DIRECT). Auto: through it
// when all the weights can stay cached beside the budget, around it otherwise, so that streaming
// a model that cannot stay cached does not evict every other file the machine has cached.
enum class IoMode { Auto, Cached, Direct };
const char* io_mode_name(IoMode mode);
IoMode parse_io_mode(const std::string& text);  // "auto", "cached", "direct"; throws lw::Error otherwise

struct PlanRequest {
  uint64_t budget_bytes = 0;
  int sequences = 1;          // sequences that advance together
  int context_tokens = 0;     // per sequence: prompt + generated tokens (KV capacity)
  int prompt_tokens = 0;      // all prompt tokens of all sequences (the largest sweep wanted)
  bool all_logits = false;    // logits for every token rather than the last of each sequence
  uint64_t process_bytes = 0; // memory the process holds before the engine allocates (code, libraries)
  int threads = 1;
  int64_t kv_positions = 0;   // KV positions of all sequences together; 0: sequences x context_tokens
  int logit_chunk = 0;        // with all_logits: logits held at most this many rows at a time (0: all)
  IoMode io_mode = IoMode::Auto;
  uint64_t cache_room_bytes = 0;  // memory the machine has beyond this budget, where the page cache can live
  DType kv_dtype = DType::F32;    // the KV cache's elements: F32 (4 bytes), F16 or BF16 (2 bytes)
};

struct MemoryPlan {
  std::vector<bool> resident;  // per unit; the embedding is never loaded whole (rows are read on demand)
  int stream_slots = 0;        // 0 when every unit is resident
  uint64_t slot_bytes = 0;     // size of one streaming buffer (the largest streamed unit)
  int tokens_per_sweep = 0;    // prefill is cut into chunks of at most this many tokens
  uint64_t process_bytes = 0, overhead_bytes = 0, kv_bytes = 0, activation_bytes = 0, resident_bytes = 0,
           stream_bytes = 0;
  uint64_t total_bytes() const;
  uint64_t minimum_budget = 0;  // the least budget that runs this request at all
  uint64_t streamed_bytes_per_sweep = 0;
  uint64_t weight_bytes = 0;  // all loadable units together: what a sweep computes on
  DType kv_dtype = DType::F32;  // what kv_bytes holds
  bool direct_io = false;     // read around the page cache
  std::string io_reason;      // why, in words
  int resident_units() const;
  bool streams() const { return stream_slots > 0; }
};

// Saturate at kSizeOverflow (common/sizes.h) rather than wrap.
// "f32", "f16", "bf16": a KV dtype as --kv-dtype spells it.
const char* kv_dtype_text(DType dtype);
// Keys and values of every layer for `positions` positions, dtype_size(kv_dtype) bytes a value.
uint64_t kv_cache_bytes(const ModelConfig& config, uint64_t positions, DType kv_dtype = DType::F32);
uint64_t activation_bytes(const ModelConfig& config, int tokens, int logit_rows, int threads);

// unit_bytes: the memory each unit occupies when loaded (index 0 is the embedding: not loaded).
// Throws lw::Error when the budget cannot hold one unit plus the working set, saying the minimum.
MemoryPlan plan_memory(const ModelConfig& config, const std::vector<uint64_t>& unit_bytes, const PlanRequest& request);

std::string describe_plan(const MemoryPlan& plan, const std::vector<std::string>& unit_names);

// Measured speeds of this machine for this checkpoint (Engine::measure_speeds).
struct MeasuredSpeeds {
  double read_bytes_per_second = 0;     // the plan's reads (direct: the disk; cached: as cached now)
  double compute_bytes_per_second = 0;  // weights a one-token sweep computes on, per second
};
// A decode sweep (one token per sequence) streams what is not resident while the kernels run
// over all the weights; with read-ahead the two overlap and the longer one sets the pace.
struct SweepPrediction {
  double read_seconds = 0, compute_seconds = 0, sweep_seconds = 0;
  bool io_bound() const { return read_seconds > compute_seconds; }
};
SweepPrediction predict_decode_sweep(const MemoryPlan& plan, const MeasuredSpeeds& speeds);
std::string describe_prediction(const MemoryPlan& plan, const MeasuredSpeeds& speeds);

}  // namespace lw
