#include "runtime/engine.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/system.h"
#include "io/read_pipeline.h"

namespace lw {

// On the bits (exponent all ones: NaN or infinity), so that the loop vectorises; std::isfinite
// does not, and under -ffast-math would fold to true.
bool all_finite(const float* values, size_t count) {
  uint32_t seen = 0;
  for (size_t i = 0; i < count; i++) {
    uint32_t bits;
    std::memcpy(&bits, values + i, sizeof bits);
    seen |= (bits & 0x7f800000u) + 0x00800000u;  // carries into the sign bit only for all ones
  }
  return (seen & 0x80000000u) == 0;
}

namespace {

// The files a unit's tensors are in, for messages: "a.safetensors" or "a, b".
std::string files_of(const Checkpoint& checkpoint, const UnitSource& unit) {
  std::vector<int> files;
  for (const auto& tensor : unit.tensors)
    if (std::find(files.begin(), files.end(), tensor.file) == files.end()) files.push_back(tensor.file);
  std::string text;
  for (int file : files) text += (text.empty() ? "" : ", ") + checkpoint.files[static_cast<size_t>(file)];
  return text;
}

// "model.layers.3.*" or "blk.3.*": the names of a layer's tensors in its file.
std::string layer_tensors(const UnitSource& unit) {
  const std::string& name = unit.tensors.front().name;
  std::string number = ".";  // appended rather than "." + ...: GCC 12 warns falsely (-Wrestrict) on that
  number += std::to_string(unit.recipe.layer);
  number += '.';
  const size_t at = name.find(number);
  return at == std::string::npos ? unit.recipe.name : name.substr(0, at + number.size()) + "*";
}

constexpr const char* kNonFiniteCause =
    ": its weights hold NaN or infinity, or values so large that they overflow (a damaged or wrongly converted file); "
    "stopping rather than sampling from them";

}  // namespace

DType default_kv_dtype(const Checkpoint& checkpoint) {
  bool all_f32 = true, any_bf16 = false;
  for (const auto& unit : checkpoint.units)
    for (const auto& tensor : unit.tensors)
      if (tensor.shape.size() == 2) all_f32 = all_f32 && tensor.dtype == DType::F32, any_bf16 = any_bf16 || tensor.dtype == DType::BF16;
  return all_f32 ? DType::F32 : any_bf16 ? DType::BF16 : DType::F16;
}

Engine::Engine(const std::string& model_path, const EngineOptions& options)
    : options_(options), checkpoint_(Checkpoint::open(model_path)) {
  budget_ = options.max_memory ? options.max_memory : current_rss_bytes() + available_memory_bytes() / 10 * 8;
  backend_ = make_cpu_backend(options.threads);
  bool all_bf16 = true, any_blocks = false;
  for (const auto& unit : checkpoint_.units)
    for (const auto& tensor : unit.tensors) {
      if (tensor.shape.size() == 2 && tensor.dtype != DType::BF16) all_bf16 = false;
      if (dtype_is_quantized(tensor.dtype)) any_blocks = true;
    }
  backend_->set_compute_dtype(options.compute_dtype.value_or(any_blocks ? DType::Q8_0 : all_bf16 ? DType::BF16 : DType::F32));
  kv_dtype_ = options.kv_dtype.value_or(default_kv_dtype(checkpoint_));
  if (!kv_dtype_supported(kv_dtype_))
    fail(std::string("a KV cache holds f32, f16 or bf16 values, not ") + dtype_name(kv_dtype_));
  embedding_ = std::make_unique<EmbeddingReader>(checkpoint_);
}

Engine::~Engine() { end(); }

std::vector<uint64_t> Engine::unit_memory_bytes() const {
  std::vector<uint64_t> bytes;
  for (const auto& unit : checkpoint_.units) bytes.push_back(unit.recipe.kind == UnitKind::Embed ? 0 : layout_unit(unit).buffer_bytes);
  return bytes;
}

MemoryPlan Engine::plan(const RunShape& shape) const {
  PlanRequest request;
  request.budget_bytes = budget_;
  request.sequences = shape.sequences;
  request.context_tokens = shape.context_tokens;
  request.kv_positions = shape.total_kv_positions();
  request.logit_chunk = shape.logit_chunk;
  request.prompt_tokens = shape.prompt_tokens;
  request.all_logits = shape.all_logits;
  request.process_bytes = options_.count_process ? current_rss_bytes() : 0;
  request.threads = backend_->threads();
  request.io_mode = options_.io_mode;
  request.kv_dtype = kv_dtype_;
  // The page cache can live in what the machine has beyond this run's budget.
  const uint64_t taken = budget_ > current_rss_bytes() ? budget_ - current_rss_bytes() : 0;
  const uint64_t available = available_memory_bytes();
  request.cache_room_bytes = available > taken ? available - taken : 0;
  return plan_memory(config(), unit_memory_bytes(), request);
}

MeasuredSpeeds Engine::measure_speeds(const MemoryPlan& plan) const {
  std::vector<int> candidates;  // the plan's streamed units, largest first; all units when none streams
  for (size_t u = 1; u < checkpoint_.units.size(); u++)
    if (!plan.streams() || !plan.resident[u]) candidates.push_back(static_cast<int>(u));
  std::vector<UnitLayout> layouts;
  for (const auto& unit : checkpoint_.units) layouts.push_back(layout_unit(unit));
  std::stable_sort(candidates.begin(), candidates.end(),
                   [&](int a, int b) { return layouts[static_cast<size_t>(a)].buffer_bytes > layouts[static_cast<size_t>(b)].buffer_bytes; });
  MeasuredSpeeds speeds;
  if (candidates.empty()) return speeds;
  const UnitLayout& largest = layouts[static_cast<size_t>(candidates[0])];
  MappedBuffer buffer(largest.buffer_bytes);
  ReadPipeline pipeline(checkpoint_.files, plan.direct_io);
  // Reads: distinct units (a re-read would come from the cache), at least 256 MiB and 0.5 s,
  // into a buffer touched beforehand as the streaming buffers are after the first sweep.
  std::memset(buffer.data(), 0, buffer.size());
  uint64_t bytes = 0;
  double seconds = 0;
  int unit = candidates[0];
  for (size_t i = 0; i < candidates.size() && (bytes < (256ull << 20) || seconds < 0.5) && seconds < 3; i++) {
    unit = candidates[i];
    const double start = now_seconds();
    bytes += read_unit(pipeline, layouts[static_cast<size_t>(unit)], buffer.data());
    seconds += now_seconds() - start;
  }
  speeds.read_bytes_per_second = seconds > 0 ? static_cast<double>(bytes) / seconds : 0;

  // Kernels: the last unit read, still in the buffer; one token through each of its matrices.
  const UnitLayout& layout = layouts[static_cast<size_t>(unit)];
  const UnitWeights weights = unit_weights(checkpoint_.units[static_cast<size_t>(unit)], layout, buffer.data());
  std::vector<const WeightView*> matrices;
  uint64_t matrix_bytes = 0, widest = 0;
  for (int r = 0; r < static_cast<int>(Role::Count); r++)
    if (weights.has[r] && weights.views[r].rows > 1) {
      matrices.push_back(&weights.views[r]);
      matrix_bytes += static_cast<uint64_t>(weights.views[r].rows) * dtype_row_bytes(weights.views[r].dtype, static_cast<uint64_t>(weights.views[r].cols));
      widest = std::max<uint64_t>(widest, std::max(weights.views[r].rows, weights.views[r].cols));
    }
  if (matrices.empty()) return speeds;
  float* in = backend_->allocate(widest);
  float* out = backend_->allocate(widest);
  for (uint64_t i = 0; i < widest; i++) in[i] = 0.001f * static_cast<float>(i % 97);
  int passes = 0;
  const double start = now_seconds();
  double elapsed = 0;
  do {
    for (const WeightView* matrix : matrices) backend_->matmul(out, in, 1, *matrix, nullptr);
    passes++;
    elapsed = now_seconds() - start;
  } while (elapsed < 0.2);
  backend_->release(in);
  backend_->release(out);
  speeds.compute_bytes_per_second = static_cast<double>(matrix_bytes) * passes / elapsed;
  return speeds;
}

float* Engine::buffer(size_t floats) {
  owned_.push_back(backend_->allocate(floats));
  return owned_.back();
}

void Engine::begin(const RunShape& shape) {
  end();
  if (shape.sequences < 1 || shape.context_tokens < 1) fail("a run needs at least one sequence and one token");
  plan_ = plan(shape);
  shape_ = shape;
  const ModelConfig& c = config();
  const size_t tokens = static_cast<size_t>(plan_.tokens_per_sweep);
  x_ = buffer(tokens * c.hidden_size);
  xb_ = buffer(tokens * c.hidden_size);
  q_ = buffer(tokens * c.q_dim());
  att_ = buffer(tokens * c.q_dim());
  k_ = buffer(tokens * c.kv_dim());
  v_ = buffer(tokens * c.kv_dim());
  gate_ = buffer(tokens * c.intermediate_size);
  up_ = buffer(tokens * c.intermediate_size);
  if (shape.logit_chunk > 0) logit_chunk_ = buffer(std::min<size_t>(static_cast<size_t>(shape.logit_chunk), tokens) * c.vocab_size);
  // Each layer's keys and values: kv_dim elements of kv_dtype_ per position (the buffers are
  // counted in floats, so half-precision caches round up to a whole float).
  const size_t cache_elements = static_cast<size_t>(shape.total_kv_positions()) * c.kv_dim();
  const size_t cache_floats = (cache_elements * dtype_size(kv_dtype_) + sizeof(float) - 1) / sizeof(float);
  for (int layer = 0; layer < c.num_layers; layer++) {
    float* k = buffer(cache_floats);
    float* v = buffer(cache_floats);
    kv_.push_back({k, v, c.kv_dim(), nullptr, kv_dtype_});
  }
  set_sequences(std::vector<SequenceSpan>(static_cast<size_t>(shape.sequences), SequenceSpan{0, shape.context_tokens, -1}));
  rope_length_ = 0;  // each run starts from the trained context, like a freshly loaded model
  inverse_frequencies_.clear();
  // LAYERWISE_NO_CHECKSUMS skips the first-read hashing (a 7B split's first sweep takes
  // seconds longer on a slow core); the size and modification-time checks stay.
  streamer_ = std::make_unique<Streamer>(checkpoint_, plan_, options_.prefetch,
                                         std::getenv("LAYERWISE_NO_CHECKSUMS") ? nullptr : &verified_files_);
  io_description_ = streamer_->io_description();
}

void Engine::set_sequences(const std::vector<SequenceSpan>& spans) {
  const size_t kv_dim = static_cast<size_t>(config().kv_dim());
  std::vector<KvSequence> layout;
  size_t used = 0;
  for (size_t s = 0; s < spans.size(); s++) {
    const SequenceSpan& span = spans[s];
    const bool parent_ok = span.parent < 0 ? span.first_position == 0
                                           : span.parent < static_cast<int>(s) && spans[static_cast<size_t>(span.parent)].parent < 0 &&
                                                 spans[static_cast<size_t>(span.parent)].capacity >= span.first_position;
    if (span.capacity < 1 || span.first_position < 0 || !parent_ok)
      fail("internal error: sequence " + std::to_string(s) + " is laid out inconsistently");
    layout.push_back({used * kv_dim, span.first_position, span.capacity, span.parent});
    used += static_cast<size_t>(span.capacity);
  }
  if (used > static_cast<size_t>(shape_.total_kv_positions()))
    fail("internal error: " + std::to_string(used) + " KV positions laid out in a cache of " +
         std::to_string(shape_.total_kv_positions()));
  kv_sequences_ = std::move(layout);
  for (KvLayer& layer : kv_) layer.sequences = kv_sequences_.data();
}

void Engine::end() {
  if (streamer_) {
    finished_stream_stats_.add(streamer_->stats());
    streamer_.reset();
  }
  for (float* owned : owned_) backend_->release(owned);
  owned_.clear();
  logit_chunk_ = nullptr;
  kv_.clear();
  kv_sequences_.clear();
}

int Engine::spare_sequences(int limit) const {
  auto fits = [&](int extra) {
    RunShape shape = shape_;
    shape.sequences += extra;
    if (shape.kv_positions > 0) shape.kv_positions += extra * shape.context_tokens;
    try {
      return plan(shape).resident_units() >= plan_.resident_units();
    } catch (const Error&) {
      return false;
    }
  };
  int low = 0, high = limit;  // fits(low) holds
  while (low < high) {
    const int middle = (low + high + 1) / 2;
    if (fits(middle)) low = middle;
    else high = middle - 1;
  }
  return low;
}

EngineStats Engine::stats() const {
  EngineStats stats;
  stats.stream = finished_stream_stats_;
  if (streamer_) stats.stream.add(streamer_->stats());
  stats.sweeps = sweeps_;
  stats.sweep_seconds = sweep_seconds_;
  stats.sweep_log = sweep_log_;
  stats.compute_seconds_per_unit = compute_seconds_per_unit_;
  stats.peak_rss_bytes = peak_rss_bytes();
  return stats;
}

void Engine::run_layer(const UnitWeights& w, int layer, int count) {
  const ModelConfig& c = config();
  Backend& b = *backend_;
  const TokenPlacement placement{count, positions_.data(), sequences_.data()};
  // Attention block
  b.rmsnorm(xb_, x_, count, w[Role::AttnNorm], static_cast<float>(c.rms_norm_eps));
  b.matmul(q_, xb_, count, w[Role::Wq], w.optional(Role::Bq));
  b.matmul(k_, xb_, count, w[Role::Wk], w.optional(Role::Bk));
  b.matmul(v_, xb_, count, w[Role::Wv], w.optional(Role::Bv));
  b.rope(q_, placement, c.num_heads, c.head_dim, inverse_frequencies_.data());
  b.rope(k_, placement, c.num_kv_heads, c.head_dim, inverse_frequencies_.data());
  b.store_kv(kv_[static_cast<size_t>(layer)], k_, v_, placement);
  b.attention(att_, q_, kv_[static_cast<size_t>(layer)], placement, c.num_heads, c.num_kv_heads, c.head_dim);
  b.matmul(xb_, att_, count, w[Role::Wo], w.optional(Role::Bo));
  b.add(x_, xb_, static_cast<size_t>(count) * c.hidden_size);
  // MLP block (SwiGLU)
  b.rmsnorm(xb_, x_, count, w[Role::MlpNorm], static_cast<float>(c.rms_norm_eps));
  b.matmul(gate_, xb_, count, w[Role::Wgate], w.optional(Role::Bgate));
  b.matmul(up_, xb_, count, w[Role::Wup], w.optional(Role::Bup));
  b.swiglu(gate_, up_, static_cast<size_t>(count) * c.intermediate_size);
  b.matmul(xb_, gate_, count, w[Role::Wdown], w.optional(Role::Bdown));
  b.add(x_, xb_, static_cast<size_t>(count) * c.hidden_size);
}

void Engine::forward(const std::vector<Token>& tokens, const std::vector<int>& logit_rows, float* logits) {
  sweep(tokens, logit_rows, logits, nullptr);
}

void Engine::forward(const std::vector<Token>& tokens, const std::vector<int>& logit_rows, const LogitsSink& sink) {
  if (!logit_chunk_) fail("internal error: forward() with a logits sink in a run begun without logit_chunk");
  sweep(tokens, logit_rows, nullptr, &sink);
}

void Engine::sweep(const std::vector<Token>& tokens, const std::vector<int>& logit_rows, float* logits, const LogitsSink* sink) {
  if (!streamer_) fail("internal error: forward() before begin()");
  const ModelConfig& c = config();
  const int count = static_cast<int>(tokens.size());
  if (count < 1 || count > plan_.tokens_per_sweep)
    fail("internal error: " + std::to_string(count) + " tokens in a sweep planned for " + std::to_string(plan_.tokens_per_sweep));
  const double start = now_seconds();
  positions_.resize(tokens.size());
  sequences_.resize(tokens.size());
  std::vector<int32_t> ids(tokens.size());
  int longest = 0;
  for (size_t t = 0; t < tokens.size(); t++) {
    const Token& token = tokens[t];
    if (token.id < 0 || token.id >= c.vocab_size)
      fail("token id " + std::to_string(token.id) + " is outside the vocabulary (0.." + std::to_string(c.vocab_size - 1) + ")");
    const KvSequence* sequence =
        token.sequence >= 0 && token.sequence < static_cast<int>(kv_sequences_.size()) ? &kv_sequences_[static_cast<size_t>(token.sequence)] : nullptr;
    if (!sequence || token.position < sequence->first_position || token.position >= sequence->first_position + sequence->capacity)
      fail("internal error: token placed outside the planned KV cache");
    ids[t] = token.id;
    positions_[t] = token.position;
    sequences_[t] = token.sequence;
    longest = std::max(longest, token.position + 1);
  }
  // Dynamic NTK scaling follows transformers: the frequencies are recomputed whenever a pass
  // reaches past the longest context seen so far, and return to the original ones when a pass
  // falls back under the trained length. Keys already cached keep the rotation they were made with.
  int length = rope_length_;
  if (length == 0) length = c.rope.original_max_position;
  if (c.rope.type == RopeType::Dynamic) {
    if (longest > length) length = longest;
    else if (longest < c.rope.original_max_position && length > c.rope.original_max_position)
      length = c.rope.original_max_position;
  }
  if (inverse_frequencies_.empty() || length != rope_length_) {
    inverse_frequencies_ = rope_inverse_frequencies(c, length);
    rope_length_ = length;
  }
  const StreamStats before = streamer_->stats();
  if (compute_seconds_per_unit_.size() < checkpoint_.units.size()) compute_seconds_per_unit_.resize(checkpoint_.units.size());
  embedding_->read_rows(ids.data(), count, x_);
  // Non-finite values are checked where they first appear: the embedding rows, each layer's
  // output (count x hidden floats, nothing beside the layer's products) and the logits.
  const size_t hidden_floats = static_cast<size_t>(count) * c.hidden_size;
  if (!all_finite(x_, hidden_floats))
    fail(files_of(checkpoint_, checkpoint_.embed()), "the embedding rows of this sweep's tokens are NaN or infinite" +
                                                         std::string(kNonFiniteCause));
  for (int layer = 0; layer < c.num_layers; layer++) {
    const UnitWeights& weights = streamer_->acquire(layer + 1);
    const double computing = now_seconds();
    run_layer(weights, layer, count);
    const UnitSource& unit = checkpoint_.units[static_cast<size_t>(layer + 1)];
    if (!all_finite(x_, hidden_floats))
      fail(files_of(checkpoint_, unit), "layer " + std::to_string(layer) + " (" + layer_tensors(unit) +
                                            ") gives NaN or infinite hidden states" + kNonFiniteCause);
    compute_seconds_per_unit_[static_cast<size_t>(layer + 1)] += now_seconds() - computing;
    streamer_->release(layer + 1);
  }
  const int head = c.num_layers + 1;
  const UnitWeights& weights = streamer_->acquire(head);
  const double computing = now_seconds();
  const size_t rows = logit_rows.size(), chunk = sink ? std::min(static_cast<size_t>(shape_.logit_chunk), static_cast<size_t>(plan_.tokens_per_sweep))
                                         : std::max<size_t>(rows, 1);
  for (size_t first = 0; first < rows; first += chunk) {
    const size_t in_chunk = std::min(chunk, rows - first);
    for (size_t i = 0; i < in_chunk; i++)
      std::memcpy(xb_ + i * c.hidden_size, x_ + static_cast<size_t>(logit_rows[first + i]) * c.hidden_size,
                  c.hidden_size * sizeof(float));
    backend_->rmsnorm(xb_, xb_, static_cast<int>(in_chunk), weights[Role::FinalNorm], static_cast<float>(c.rms_norm_eps));
    float* out = sink ? logit_chunk_ : logits + first * static_cast<size_t>(c.vocab_size);
    backend_->matmul(out, xb_, static_cast<int>(in_chunk), weights[Role::LmHead], nullptr);
    if (!all_finite(out, in_chunk * static_cast<size_t>(c.vocab_size)))
      fail(files_of(checkpoint_, checkpoint_.head()), "the output head (final norm and lm_head) gives NaN or infinite logits" +
                                                          std::string(kNonFiniteCause));
    if (sink) (*sink)(first, in_chunk, out);
  }
  compute_seconds_per_unit_[static_cast<size_t>(head)] += now_seconds() - computing;
  streamer_->release(head);
  const double seconds = now_seconds() - start;
  const StreamStats after = streamer_->stats();
  sweep_log_.push_back({count, seconds, after.wait_seconds - before.wait_seconds, after.read_seconds - before.read_seconds,
                        after.bytes_read - before.bytes_read});
  sweeps_++;
  sweep_seconds_ += seconds;
}

}  // namespace lw
