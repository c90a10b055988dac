// The streaming runtime: one forward pass = one sweep over the layers for a whole batch of
// tokens, each layer acquired from the streamer, run by the backend, then released.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "checkpoint/checkpoint.h"
#include "plan/plan.h"
#include "runtime/streamer.h"

namespace lw {

// True when no value is NaN or infinite. The engine checks the embedding rows, each layer's
// output and the logits of every sweep with it.
bool all_finite(const float* values, size_t count);

struct EngineOptions {
  uint64_t max_memory = 0;  // 0: a default from the machine's free memory
  int threads = 0;          // 0: all cores
  bool prefetch = true;     // false: read each unit only when it is needed (a baseline)
  // true: the budget also covers the process itself (code, libraries, heap so far), as the CLI
  // promises; false: only what the engine allocates (embedders that budget their own process).
  bool count_process = true;
  // Precision of matrix products (Backend::set_compute_dtype). Unset: Q8_0 (integer products)
  // when any matrix is stored in blocks, as llama.cpp computes them; BF16 for checkpoints whose
  // matrices are all stored in BF16 (computed as transformers computes them: BF16 products,
  // F32 accumulation); F32 for everything else.
  std::optional<DType> compute_dtype = std::nullopt;
  IoMode io_mode = IoMode::Auto;  // reads through the page cache or around it (plan/plan.h)
  // Element type of the KV cache: F32, F16 or BF16 (half the memory, values rounded to nearest
  // even when stored; attention still computes in float32). Unset: default_kv_dtype.
  std::optional<DType> kv_dtype = std::nullopt;
};

// The KV cache's default element type for a checkpoint: the precision of its weights. F32 when
// every matrix is F32 (results as exact as float32 transformers'), BF16 when any matrix is BF16
// (a bfloat16 model: its keys and values need bfloat16's range, and transformers running it
// natively caches them in bfloat16), F16 otherwise (F16 weights, as transformers caches them
// natively; quantized blocks, as llama.cpp's cache does by default).
DType default_kv_dtype(const Checkpoint& checkpoint);

// What a run will ask of the engine, so memory can be planned before anything is allocated.
struct RunShape {
  int sequences = 1;
  int context_tokens = 0;  // per sequence
  int prompt_tokens = 0;   // all sequences together
  bool all_logits = false;
  // KV cache positions for all sequences together; 0: sequences x context_tokens. Runs that
  // lay out their own sequences (set_sequences) size the cache with this.
  int kv_positions = 0;
  // With all_logits: the logits are consumed in chunks of at most this many rows (forward with
  // a LogitsSink), so they need not all be in memory at once; 0: all rows at once.
  int logit_chunk = 0;
  int64_t total_kv_positions() const { return kv_positions > 0 ? kv_positions : int64_t{sequences} * context_tokens; }
};

// A sequence of the KV cache: its own positions first_position .. first_position + capacity - 1;
// positions below first_position are read from sequence `parent` (a shared prefix, which starts
// at position 0 and has no parent).
struct SequenceSpan {
  int first_position = 0;
  int capacity = 0;
  int parent = -1;
};

struct Token {
  int32_t id;
  int32_t sequence;
  int32_t position;
};

// One forward pass. Reads are those finished while it ran (read-ahead for the next sweep included).
struct SweepRecord {
  int tokens = 0;
  double seconds = 0, wait_seconds = 0, read_seconds = 0;
  uint64_t bytes_read = 0;
  double compute_seconds() const { return seconds - wait_seconds; }
};

struct EngineStats {
  StreamStats stream;
  int sweeps = 0;
  double sweep_seconds = 0;  // wall time inside forward()
  std::vector<SweepRecord> sweep_log;
  std::vector<double> compute_seconds_per_unit;  // from acquiring a unit to releasing it
  uint64_t peak_rss_bytes = 0;
};

class Engine {
 public:
  Engine(const std::string& model_path, const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const Checkpoint& checkpoint() const { return checkpoint_; }
  const ModelConfig& config() const { return checkpoint_.config; }
  uint64_t budget_bytes() const { return budget_; }
  int threads() const { return backend_->threads(); }
  const char* kernel_set() const { return backend_->kernel_set(); }
  DType compute_dtype() const { return backend_->compute_dtype(); }
  const char* matrix_units() const { return backend_->matrix_units(); }
  DType kv_dtype() const { return kv_dtype_; }
  bool kv_dtype_is_default() const { return !options_.kv_dtype.has_value(); }
  std::vector<uint64_t> unit_memory_bytes() const;
  MemoryPlan plan(const RunShape& shape) const;  // throws lw::Error if the budget is too small
  // Reads a few of the plan's streamed units (all units when none streams) the way the plan
  // reads them, and times the kernels on one of them for one token: ~0.1-1 s.
  MeasuredSpeeds measure_speeds(const MemoryPlan& plan) const;

  // Plans, allocates the KV cache and buffers, and starts reading ahead. The cache starts as
  // shape.sequences sequences of shape.context_tokens positions each.
  void begin(const RunShape& shape);
  // Lays the cache out afresh (what it held is forgotten): sequence s of the next sweeps is
  // spans[s]. The capacities together may not exceed the cache begun with.
  void set_sequences(const std::vector<SequenceSpan>& spans);
  void end();
  const MemoryPlan& active_plan() const { return plan_; }

  // One sweep. Writes logits for tokens[logit_rows[i]] to logits + i * vocab.
  void forward(const std::vector<Token>& tokens, const std::vector<int>& logit_rows, float* logits);
  // The same, handing the logits over in chunks: sink(first, count, logits) gets the rows
  // logit_rows[first .. first + count) (count x vocab floats, valid during the call).
  using LogitsSink = std::function<void(size_t first, size_t count, const float* logits)>;
  void forward(const std::vector<Token>& tokens, const std::vector<int>& logit_rows, const LogitsSink& sink);
  EngineStats stats() const;
  std::string io_description() const { return io_description_; }  // how the last run read (Streamer::io_description)
  // How many more sequences the last run's plan could have carried without giving up a
  // resident layer (so without reading more per sweep); at most `limit`.
  int spare_sequences(int limit) const;

 private:
  void run_layer(const UnitWeights& w, int layer, int count);
  void sweep(const std::vector<Token>& tokens, const std::vector<int>& logit_rows, float* logits, const LogitsSink* sink);
  float* buffer(size_t floats);

  EngineOptions options_;
  Checkpoint checkpoint_;
  uint64_t budget_ = 0;
  DType kv_dtype_ = DType::F32;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<EmbeddingReader> embedding_;
  std::unique_ptr<Streamer> streamer_;
  MemoryPlan plan_;
  RunShape shape_;
  std::vector<float*> owned_;
  float *x_ = nullptr, *xb_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *att_ = nullptr, *gate_ = nullptr,
        *up_ = nullptr, *logit_chunk_ = nullptr;
  std::vector<KvLayer> kv_;
  std::vector<KvSequence> kv_sequences_;  // the layout every layer's cache shares
  std::vector<int32_t> positions_, sequences_;
  std::vector<float> inverse_frequencies_;
  int rope_length_ = 0;  // context length the dynamic RoPE frequencies were last computed for
  StreamStats finished_stream_stats_;
  int sweeps_ = 0;
  double sweep_seconds_ = 0;
  std::vector<SweepRecord> sweep_log_;
  std::vector<double> compute_seconds_per_unit_;
  std::string io_description_ = "nothing read yet";
  // Per file of the checkpoint: its manifest checksum has been checked (once per engine: later
  // sweeps rely on the size and modification-time checks of every read).
  std::vector<bool> verified_files_;
};

}  // namespace lw
