#include "runtime/streamer.h"

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "common/sizes.h"
#include "common/system.h"

namespace lw {
namespace {

constexpr uint64_t kAlignment = 64;  // decoded regions: cache lines
constexpr uint64_t kMaxGapToCoalesce = 64 << 10;

uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

}  // namespace

UnitLayout layout_unit(const UnitSource& unit) {
  UnitLayout layout;
  std::vector<size_t> order(unit.tensors.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto &x = unit.tensors[a], &y = unit.tensors[b];
    return x.file != y.file ? x.file < y.file : x.offset < y.offset;
  });
  layout.tensor_offsets.resize(unit.tensors.size());
  for (size_t i : order) {
    const TensorLocation& tensor = unit.tensors[i];
    if (tensor.needs_decoding()) {  // its own region, its own read
      const uint64_t region = align_up(layout.buffer_bytes, kAlignment);
      layout.reads.push_back({tensor.file, tensor.offset, tensor.bytes, region + tensor.loaded_bytes() - tensor.bytes, &tensor, region});
      layout.tensor_offsets[i] = region;
      layout.buffer_bytes = region + tensor.loaded_bytes();
      continue;
    }
    UnitLayout::Read* last = layout.reads.empty() ? nullptr : &layout.reads.back();
    const bool joins = last && !last->decode && last->file == tensor.file && tensor.offset >= last->offset + last->bytes &&
                       tensor.offset - (last->offset + last->bytes) <= kMaxGapToCoalesce;
    const bool shares = last && !last->decode && last->file == tensor.file && tensor.offset >= last->offset &&
                        tensor.offset + tensor.bytes <= last->offset + last->bytes;  // a tied tensor read twice
    if (shares) {
      layout.tensor_offsets[i] = last->buffer_offset + (tensor.offset - last->offset);
      continue;
    }
    if (joins) {
      last->bytes = tensor.offset + tensor.bytes - last->offset;
    } else {
      // The file's offset modulo a page: a direct read of whole pages lands the bytes here.
      uint64_t start = align_up(layout.buffer_bytes, kDirectAlignment) + tensor.offset % kDirectAlignment;
      layout.reads.push_back({tensor.file, tensor.offset, tensor.bytes, start});
      last = &layout.reads.back();
    }
    layout.tensor_offsets[i] = last->buffer_offset + (tensor.offset - last->offset);
    layout.buffer_bytes = std::max(layout.buffer_bytes, align_up(last->buffer_offset + last->bytes, kDirectAlignment));
  }
  return layout;
}

uint64_t read_unit(ReadPipeline& pipeline, const UnitLayout& layout, char* buffer) {
  std::vector<ReadRange> ranges;
  for (const auto& read : layout.reads) {
    const bool direct = pipeline.direct() && !read.decode;  // decoded tensors: unaligned, through the cache
    const uint64_t head = direct ? read.offset % kDirectAlignment : 0;
    ranges.push_back({read.file, read.offset - head, direct ? align_up(head + read.bytes, kDirectAlignment) : read.bytes,
                      head + read.bytes, buffer + read.buffer_offset - head, direct});
  }
  const uint64_t bytes = pipeline.read(ranges);
  for (const auto& read : layout.reads)
    if (read.decode) decode_rows(*read.decode, buffer + read.region_offset, read.decode->rows());
  return bytes;
}

void StreamStats::add(const StreamStats& other) {
  bytes_read += other.bytes_read;
  unit_loads += other.unit_loads;
  read_seconds += other.read_seconds;
  wait_seconds += other.wait_seconds;
  auto add_each = [](auto& into, const auto& from) {
    if (into.size() < from.size()) into.resize(from.size());
    for (size_t i = 0; i < from.size(); i++) into[i] += from[i];
  };
  add_each(loads_per_unit, other.loads_per_unit);
  add_each(bytes_per_unit, other.bytes_per_unit);
  add_each(read_seconds_per_unit, other.read_seconds_per_unit);
  add_each(wait_seconds_per_unit, other.wait_seconds_per_unit);
}

EmbeddingReader::EmbeddingReader(const Checkpoint& checkpoint)
    : table_(checkpoint.embed().tensors[0]), file_(checkpoint.files[static_cast<size_t>(table_.file)]) {}

void EmbeddingReader::read_rows(const int32_t* tokens, int count, float* out) const {
  const uint64_t width = table_.row_elements(), stored = table_.stored_row_bytes(), loaded = table_.loaded_row_bytes();
  std::vector<char> row(loaded);
  for (int t = 0; t < count; t++) {
    file_.read_at(row.data() + loaded - stored, stored, table_.offset + static_cast<uint64_t>(tokens[t]) * stored);
    decode_rows(table_, row.data(), 1);
    convert_to_f32(row.data(), table_.dtype, width, out + static_cast<uint64_t>(t) * width);
  }
}

UnitWeights unit_weights(const UnitSource& source, const UnitLayout& layout, const char* buffer) {
  UnitWeights weights;
  for (size_t i = 0; i < source.tensors.size(); i++) {
    const auto& shape = source.tensors[i].shape;
    int role = static_cast<int>(source.recipe.tensors[i].role);
    weights.views[role] = {buffer + layout.tensor_offsets[i], source.tensors[i].dtype, shape.size() == 2 ? shape[0] : 1,
                           shape.back()};
    weights.has[role] = true;
  }
  return weights;
}

Streamer::Streamer(const Checkpoint& checkpoint, const MemoryPlan& plan, bool prefetch)
    : checkpoint_(checkpoint), pipeline_(checkpoint.files, plan.direct_io), resident_(plan.resident), prefetch_(prefetch) {
  const size_t units = checkpoint.units.size();
  for (const auto& unit : checkpoint.units) layouts_.push_back(layout_unit(unit));
  resident_buffers_.resize(units);
  resident_weights_.resize(units);
  resident_ready_.assign(units, false);
  stats_.loads_per_unit.assign(units, 0);
  stats_.bytes_per_unit.assign(units, 0);
  stats_.read_seconds_per_unit.assign(units, 0);
  stats_.wait_seconds_per_unit.assign(units, 0);
  for (size_t u = 1; u < units; u++)
    if (resident_[u]) resident_buffers_[u] = MappedBuffer(layouts_[u].buffer_bytes);
  slots_.resize(static_cast<size_t>(plan.stream_slots));
  for (size_t s = 0; s < slots_.size(); s++) {
    slots_[s].buffer = MappedBuffer(plan.slot_bytes);
    free_slots_.push_back(static_cast<int>(s));
  }
  reader_thread_ = std::thread([this] { reader_loop(); });
}

Streamer::~Streamer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  reader_thread_.join();
}

void Streamer::load(int unit, char* buffer) {
  const double start = now_seconds();
  const uint64_t bytes = read_unit(pipeline_, layouts_[static_cast<size_t>(unit)], buffer);
  const double seconds = now_seconds() - start;
  std::lock_guard lock(mutex_);
  stats_.bytes_read += bytes;
  stats_.unit_loads++;
  stats_.read_seconds += seconds;
  const auto u = static_cast<size_t>(unit);
  stats_.loads_per_unit[u]++;
  stats_.bytes_per_unit[u] += bytes;
  stats_.read_seconds_per_unit[u] += seconds;
}

std::string Streamer::io_description() const {
  std::string text = "through the page cache (pread, kernel read-ahead)";
  if (pipeline_.direct())
    text = std::string("direct (") + pipeline_.method() + ", up to " +
           std::to_string(std::string(pipeline_.method()) == "io_uring" ? ReadPipeline::kDepth : 1) + " reads of " +
           format_size(ReadPipeline::kChunkBytes) + " in flight)";
  if (!pipeline_.direct_refusal().empty()) text += "; direct reads refused: " + pipeline_.direct_refusal();
  return text;
}

void Streamer::reader_loop() {
  const int units = static_cast<int>(checkpoint_.units.size());
  bool any_streamed = false;
  for (int u = 1; u < units; u++) any_streamed |= !resident_[static_cast<size_t>(u)];
  try {
    for (bool first_pass = true;; first_pass = false) {
      for (int u = 1; u < units; u++) {
        if (resident_[static_cast<size_t>(u)]) {
          if (!first_pass) continue;
          load(u, resident_buffers_[static_cast<size_t>(u)].data());
          std::lock_guard lock(mutex_);
          resident_weights_[static_cast<size_t>(u)] =
              unit_weights(checkpoint_.units[static_cast<size_t>(u)], layouts_[static_cast<size_t>(u)], resident_buffers_[static_cast<size_t>(u)].data());
          resident_ready_[static_cast<size_t>(u)] = true;
          changed_.notify_all();
          continue;
        }
        int slot;
        {
          std::unique_lock lock(mutex_);
          // Without prefetch, wait until the compute thread has released everything (serial reading).
          changed_.wait(lock, [&] {
            return stopping_ || (!free_slots_.empty() && (prefetch_ || (ready_slots_.empty() && in_use_ < 0)));
          });
          if (stopping_) return;
          slot = free_slots_.back();
          free_slots_.pop_back();
        }
        load(u, slots_[static_cast<size_t>(slot)].buffer.data());
        std::lock_guard lock(mutex_);
        slots_[static_cast<size_t>(slot)].unit = u;
        slots_[static_cast<size_t>(slot)].weights =
            unit_weights(checkpoint_.units[static_cast<size_t>(u)], layouts_[static_cast<size_t>(u)], slots_[static_cast<size_t>(slot)].buffer.data());
        ready_slots_.push_back(slot);
        changed_.notify_all();
      }
      if (!any_streamed) return;
    }
  } catch (const Error& error) {
    std::lock_guard lock(mutex_);
    read_error_ = error.what();  // handed to the compute thread at its next acquire
    changed_.notify_all();
  }
}

const UnitWeights& Streamer::acquire(int index) {
  double start = now_seconds();
  std::unique_lock lock(mutex_);
  const UnitWeights* found = nullptr;
  if (resident_[static_cast<size_t>(index)]) {
    changed_.wait(lock, [&] { return resident_ready_[static_cast<size_t>(index)] || !read_error_.empty(); });
    if (!read_error_.empty()) throw Error(read_error_);
    found = &resident_weights_[static_cast<size_t>(index)];
  } else {
    changed_.wait(lock, [&] { return !ready_slots_.empty() || !read_error_.empty(); });
    if (!read_error_.empty()) throw Error(read_error_);
    int slot = ready_slots_.front();
    if (slots_[static_cast<size_t>(slot)].unit != index)
      fail("internal error: unit " + std::to_string(index) + " acquired out of sweep order");
    ready_slots_.pop_front();
    in_use_ = slot;
    found = &slots_[static_cast<size_t>(slot)].weights;
  }
  const double waited = now_seconds() - start;
  stats_.wait_seconds += waited;
  stats_.wait_seconds_per_unit[static_cast<size_t>(index)] += waited;
  return *found;
}

void Streamer::release(int index) {
  if (resident_[static_cast<size_t>(index)]) return;
  {
    std::lock_guard lock(mutex_);
    free_slots_.push_back(in_use_);
    in_use_ = -1;
  }
  changed_.notify_all();
}

StreamStats Streamer::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace lw
