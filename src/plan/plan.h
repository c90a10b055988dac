// Turns a memory budget into a plan: which units stay resident, how many buffers stream the
// rest (one computing while the next is read), how many tokens pass a layer per sweep, and the
// KV cache. Everything the engine holds is in the plan, including the process itself.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace lw {

struct PlanRequest {
  uint64_t budget_bytes = 0;
  int sequences = 1;          // sequences that advance together
  int context_tokens = 0;     // per sequence: prompt + generated tokens (KV capacity)
  int prompt_tokens = 0;      // all prompt tokens of all sequences (the largest sweep wanted)
  bool all_logits = false;    // logits for every token rather than the last of each sequence
  uint64_t process_bytes = 0; // memory the process holds before the engine allocates (code, libraries)
  int threads = 1;
  int kv_positions = 0;       // KV positions of all sequences together; 0: sequences x context_tokens
  int logit_chunk = 0;        // with all_logits: logits held at most this many rows at a time (0: all)
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
  int resident_units() const;
  bool streams() const { return stream_slots > 0; }
};

uint64_t kv_cache_bytes(const ModelConfig& config, int positions);
uint64_t activation_bytes(const ModelConfig& config, int tokens, int logit_rows, int threads);

// unit_bytes: the memory each unit occupies when loaded (index 0 is the embedding: not loaded).
// Throws lw::Error when the budget cannot hold one unit plus the working set, saying the minimum.
MemoryPlan plan_memory(const ModelConfig& config, const std::vector<uint64_t>& unit_bytes, const PlanRequest& request);

std::string describe_plan(const MemoryPlan& plan, const std::vector<std::string>& unit_names);

}  // namespace lw
