#include "format/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file.h"

namespace lw {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit
constexpr uint64_t kDataAlignment = 4096;
constexpr uint64_t kTensorAlignment = 64;

size_t element_size_of(const std::string& dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I16", 2}, {"U16", 2},
      {"F16", 2},  {"BF16", 2}, {"I32", 4}, {"U32", 4},     {"F32", 4},     {"I64", 8}, {"U64", 8},
      {"F64", 8}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

}  // namespace

uint64_t SafetensorsTensor::elements() const {
  uint64_t count = 1;
  for (int64_t dim : shape) count *= static_cast<uint64_t>(dim);
  return count;
}

const SafetensorsTensor* SafetensorsHeader::find(const std::string& name) const {
  for (const auto& tensor : tensors)
    if (tensor.name == name) return &tensor;
  return nullptr;
}

SafetensorsHeader parse_safetensors_header(std::string_view text, uint64_t data_bytes, const std::string& path) {
  // The header is an object of objects holding short arrays: refuse deeper nesting as it is
  // parsed, so a hostile header cannot make the parser build a huge tree.
  constexpr int kMaxDepth = 3;
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text.begin(), text.end(), [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
      if (depth >= kMaxDepth && (event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start))
        fail(path, "safetensors header nests deeper than the format allows");
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("safetensors header is not valid JSON (") + e.what() + ")");
  }
  if (!json.is_object()) fail(path, "safetensors header is not a JSON object");
  SafetensorsHeader header;
  for (const auto& [name, entry] : json.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail(path, "__metadata__ value for '" + key + "' is not a string");
        header.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!entry.is_object()) fail(path, where + " is not an object");
    auto dtype = entry.find("dtype");
    auto shape = entry.find("shape");
    auto offsets = entry.find("data_offsets");
    if (dtype == entry.end() || !dtype->is_string()) fail(path, where + " has no string 'dtype'");
    if (shape == entry.end() || !shape->is_array()) fail(path, where + " has no 'shape' array");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2)
      fail(path, where + " has no 'data_offsets' pair");
    SafetensorsTensor tensor;
    tensor.name = name;
    tensor.dtype_name = dtype->get<std::string>();
    tensor.element_size = element_size_of(tensor.dtype_name);
    // A split's quantized matrices: ggml blocks along each row (format/dtype.h).
    const std::optional<DType> blocks = dtype_from_name(tensor.dtype_name);
    const bool blocked = blocks && dtype_is_quantized(*blocks);
    if (tensor.element_size == 0 && !blocked) fail(path, where + " has unknown dtype '" + tensor.dtype_name + "'");
    if (shape->size() > 16) fail(path, where + " has more than 16 dimensions");
    uint64_t elements = 1;
    for (const auto& dim : *shape) {
      if (!dim.is_number_unsigned()) fail(path, where + " has a shape entry that is not a non-negative integer");
      uint64_t extent = dim.get<uint64_t>();
      if (extent > (1ull << 40) || (extent && elements > (1ull << 50) / extent))
        fail(path, where + " has an impossibly large shape");
      elements *= extent;
      tensor.shape.push_back(static_cast<int64_t>(extent));
    }
    for (const auto& offset : *offsets)
      if (!offset.is_number_unsigned()) fail(path, where + " has a data offset that is not a non-negative integer");
    tensor.begin = (*offsets)[0].get<uint64_t>();
    tensor.end = (*offsets)[1].get<uint64_t>();
    if (tensor.begin > tensor.end) fail(path, where + " has data_offsets that run backwards");
    if (tensor.end > data_bytes)
      fail(path, where + " has data offsets [" + std::to_string(tensor.begin) + ", " + std::to_string(tensor.end) +
                     ") past the end of the data (" + std::to_string(data_bytes) + " bytes; is the file truncated?)");
    uint64_t needed = elements * tensor.element_size;
    if (blocked) {
      const uint64_t row = tensor.shape.empty() ? 1 : static_cast<uint64_t>(tensor.shape.back());
      if (row % dtype_format(*blocks).block_elements != 0)
        fail(path, where + " has rows of " + std::to_string(row) + " elements, not a multiple of " + tensor.dtype_name +
                       "'s block of " + std::to_string(dtype_format(*blocks).block_elements));
      needed = row == 0 ? 0 : elements / row * dtype_row_bytes(*blocks, row);
    }
    if (tensor.end - tensor.begin != needed)
      fail(path, where + " holds " + std::to_string(tensor.end - tensor.begin) + " bytes but its shape and dtype need " +
                     std::to_string(needed));
    header.tensors.push_back(std::move(tensor));
  }
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const auto& a, const auto& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  const SafetensorsTensor* furthest = nullptr;  // the non-empty tensor that ends last so far
  for (const auto& current : header.tensors) {
    if (current.end == current.begin) continue;
    if (furthest && current.begin < furthest->end)
      fail(path, "tensors '" + furthest->name + "' and '" + current.name + "' overlap in the data section");
    if (!furthest || current.end > furthest->end) furthest = &current;
  }
  return header;
}

SafetensorsFile open_safetensors(const std::string& path) {
  File input(path);
  SafetensorsFile file;
  file.path = path;
  file.file_bytes = input.size();
  if (file.file_bytes < 8) fail(path, "too short to be a safetensors file (" + std::to_string(file.file_bytes) + " bytes)");
  unsigned char length_bytes[8];
  input.read_at(length_bytes, 8, 0);
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; i--) header_bytes = header_bytes << 8 | length_bytes[i];
  if (header_bytes > kMaxHeaderBytes) fail(path, "safetensors header length " + std::to_string(header_bytes) + " is implausible (limit 100 MiB)");
  if (header_bytes > file.file_bytes - 8)
    fail(path, "safetensors header length " + std::to_string(header_bytes) + " runs past the end of the file (" +
                   std::to_string(file.file_bytes) + " bytes)");
  std::string text(header_bytes, '\0');
  input.read_at(text.data(), header_bytes, 8);
  file.data_offset = 8 + header_bytes;
  file.header = parse_safetensors_header(text, file.file_bytes - file.data_offset, path);
  return file;
}

uint64_t TensorSpec::bytes() const {
  if (shape.empty()) return dtype_row_bytes(dtype, 1);
  uint64_t count = dtype_row_bytes(dtype, static_cast<uint64_t>(shape.back()));
  for (size_t i = 0; i + 1 < shape.size(); i++) count *= static_cast<uint64_t>(shape[i]);
  return count;
}

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<TensorSpec> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)), temp_path_(path_ + ".tmp"), tensors_(std::move(tensors)) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& tensor : tensors_) {
    offset = align_up(offset, kTensorAlignment);
    offsets_.push_back(offset);
    header[tensor.name] = {{"dtype", dtype_name(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.bytes()}}};
    offset += tensor.bytes();
  }
  std::string text = header.dump();
  // Pad with spaces (allowed by the format) so the data section starts 4 KiB-aligned.
  text.resize(align_up(8 + text.size(), kDataAlignment) - 8, ' ');
  fd_ = open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(temp_path_, std::string("cannot create: ") + std::strerror(errno));
  hash_state_ = XXH3_createState();
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(hash_state_));
  unsigned char length_bytes[8];
  for (int i = 0; i < 8; i++) length_bytes[i] = static_cast<unsigned char>(text.size() >> (8 * i));
  write_bytes(length_bytes, 8);
  write_bytes(text.data(), text.size());
  written_ = 0;  // from here on, offsets within the data section
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) {
    close(fd_);
    unlink(temp_path_.c_str());
  }
  if (hash_state_) XXH3_freeState(static_cast<XXH3_state_t*>(hash_state_));
}

void SafetensorsWriter::write_bytes(const void* data, size_t size) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(hash_state_), data, size);
  const char* in = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t done = write(fd_, in, size);
    if (done < 0 && errno == EINTR) continue;
    if (done < 0) fail(temp_path_, std::string("write failed: ") + std::strerror(errno));
    in += done;
    size -= static_cast<size_t>(done);
    written_ += static_cast<uint64_t>(done);
  }
}

void SafetensorsWriter::append(const void* data, uint64_t bytes) {
  static const char zeros[kTensorAlignment] = {};
  const char* in = static_cast<const char*>(data);
  while (bytes > 0 || (next_ < tensors_.size() && tensors_[next_].bytes() == 0)) {
    if (next_ >= tensors_.size()) fail(temp_path_, "more tensor data written than declared");
    if (next_written_ == 0 && offsets_[next_] > written_) write_bytes(zeros, offsets_[next_] - written_);
    uint64_t take = std::min(bytes, tensors_[next_].bytes() - next_written_);
    write_bytes(in, take);
    in += take;
    bytes -= take;
    next_written_ += take;
    if (next_written_ == tensors_[next_].bytes()) {
      next_++;
      next_written_ = 0;
    }
  }
}

SafetensorsWriter::Result SafetensorsWriter::commit() {
  if (next_ != tensors_.size()) fail(temp_path_, "commit before all tensors were written");
  if (fsync(fd_) != 0) fail(temp_path_, std::string("fsync failed: ") + std::strerror(errno));
  off_t size = lseek(fd_, 0, SEEK_CUR);
  close(fd_);
  fd_ = -1;
  if (rename(temp_path_.c_str(), path_.c_str()) != 0)
    fail(path_, std::string("cannot rename from ") + temp_path_ + ": " + std::strerror(errno));
  return {static_cast<uint64_t>(size), XXH3_64bits_digest(static_cast<XXH3_state_t*>(hash_state_))};
}

}  // namespace lw
