#include "runtime/engine.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "common/system.h"

namespace lw {

Engine::Engine(const std::string& model_path, const EngineOptions& options)
    : options_(options), checkpoint_(Checkpoint::open(model_path)) {
  budget_ = options.max_memory ? options.max_memory : current_rss_bytes() + available_memory_bytes() / 10 * 8;
  backend_ = make_cpu_backend(options.threads);
  reader_ = std::make_unique<UnitReader>(checkpoint_);
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
  request.prompt_tokens = shape.prompt_tokens;
  request.all_logits = shape.all_logits;
  request.process_bytes = options_.count_process ? current_rss_bytes() : 0;
  request.threads = backend_->threads();
  return plan_memory(config(), unit_memory_bytes(), request);
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
  const size_t stride = static_cast<size_t>(shape.context_tokens) * c.kv_dim();
  for (int layer = 0; layer < c.num_layers; layer++) {
    float* k = buffer(stride * shape.sequences);
    float* v = buffer(stride * shape.sequences);
    kv_.push_back({k, v, stride, c.kv_dim()});
  }
  rope_length_ = 0;  // each run starts from the trained context, like a freshly loaded model
  inverse_frequencies_.clear();
  streamer_ = std::make_unique<Streamer>(checkpoint_, *reader_, plan_, options_.prefetch);
}

void Engine::end() {
  if (streamer_) {
    StreamStats stats = streamer_->stats();
    if (finished_stream_stats_.loads_per_unit.empty()) finished_stream_stats_.loads_per_unit.assign(stats.loads_per_unit.size(), 0);
    finished_stream_stats_.bytes_read += stats.bytes_read;
    finished_stream_stats_.unit_loads += stats.unit_loads;
    finished_stream_stats_.read_seconds += stats.read_seconds;
    finished_stream_stats_.wait_seconds += stats.wait_seconds;
    for (size_t u = 0; u < stats.loads_per_unit.size(); u++) finished_stream_stats_.loads_per_unit[u] += stats.loads_per_unit[u];
    streamer_.reset();
  }
  for (float* owned : owned_) backend_->release(owned);
  owned_.clear();
  kv_.clear();
}

EngineStats Engine::stats() const {
  EngineStats stats;
  stats.stream = finished_stream_stats_;
  if (streamer_) {
    StreamStats live = streamer_->stats();
    if (stats.stream.loads_per_unit.empty()) stats.stream.loads_per_unit.assign(live.loads_per_unit.size(), 0);
    stats.stream.bytes_read += live.bytes_read;
    stats.stream.unit_loads += live.unit_loads;
    stats.stream.read_seconds += live.read_seconds;
    stats.stream.wait_seconds += live.wait_seconds;
    for (size_t u = 0; u < live.loads_per_unit.size(); u++) stats.stream.loads_per_unit[u] += live.loads_per_unit[u];
  }
  stats.sweeps = sweeps_;
  stats.sweep_seconds = sweep_seconds_;
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
    if (token.sequence < 0 || token.sequence >= shape_.sequences || token.position < 0 || token.position >= shape_.context_tokens)
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
  reader_->read_embedding_rows(ids.data(), count, x_);
  for (int layer = 0; layer < c.num_layers; layer++) {
    const UnitWeights& weights = streamer_->acquire(layer + 1);
    run_layer(weights, layer, count);
    streamer_->release(layer + 1);
  }
  const int head = c.num_layers + 1;
  const UnitWeights& weights = streamer_->acquire(head);
  const int rows = static_cast<int>(logit_rows.size());
  for (int i = 0; i < rows; i++)
    std::memcpy(xb_ + static_cast<size_t>(i) * c.hidden_size, x_ + static_cast<size_t>(logit_rows[i]) * c.hidden_size,
                c.hidden_size * sizeof(float));
  backend_->rmsnorm(xb_, xb_, rows, weights[Role::FinalNorm], static_cast<float>(c.rms_norm_eps));
  backend_->matmul(logits, xb_, rows, weights[Role::LmHead], nullptr);
  streamer_->release(head);
  sweeps_++;
  sweep_seconds_ += now_seconds() - start;
}

}  // namespace lw
