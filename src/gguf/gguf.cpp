#include "gguf/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "common/error.h"
#include "common/file.h"

namespace lw {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace {

constexpr uint32_t kMaxDims = 4;           // GGML_MAX_DIMS
constexpr uint64_t kDefaultAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT
constexpr uint64_t kChunk = uint64_t{1} << 20;      // read buffer
constexpr uint64_t kReserveCap = uint64_t{1} << 16;  // most elements reserved before reading them

// The ggml tensor types with their block sizes and bytes per block (GGML_QUANT_SIZES, gguf 0.19).
// Numbers missing here (4, 5, 31-33, 36-38: removed types) are unknown.
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {0, "F32", 1, 4},
    {1, "F16", 1, 2},
    {2, "Q4_0", 32, 2 + 16},
    {3, "Q4_1", 32, 2 + 2 + 16},
    {6, "Q5_0", 32, 2 + 4 + 16},
    {7, "Q5_1", 32, 2 + 2 + 4 + 16},
    {8, "Q8_0", 32, 2 + 32},
    {9, "Q8_1", 32, 4 + 4 + 32},
    {10, "Q2_K", 256, 2 + 2 + 256 / 16 + 256 / 4},
    {11, "Q3_K", 256, 2 + 256 / 4 + 256 / 8 + 12},
    {12, "Q4_K", 256, 2 + 2 + 256 / 2 + 12},
    {13, "Q5_K", 256, 2 + 2 + 256 / 2 + 256 / 8 + 12},
    {14, "Q6_K", 256, 2 + 256 / 2 + 256 / 4 + 256 / 16},
    {15, "Q8_K", 256, 4 + 256 + 256 / 8},
    {16, "IQ2_XXS", 256, 2 + 256 / 4},
    {17, "IQ2_XS", 256, 2 + 256 / 4 + 256 / 32},
    {18, "IQ3_XXS", 256, 2 + 256 / 4 + 256 / 8},
    {19, "IQ1_S", 256, 2 + 256 / 8 + 256 / 16},
    {20, "IQ4_NL", 32, 2 + 16},
    {21, "IQ3_S", 256, 2 + 256 / 4 + 256 / 8 + 256 / 32 + 4},
    {22, "IQ2_S", 256, 2 + 256 / 4 + 256 / 16},
    {23, "IQ4_XS", 256, 2 + 2 + 256 / 2 + 256 / 64},
    {24, "I8", 1, 1},
    {25, "I16", 1, 2},
    {26, "I32", 1, 4},
    {27, "I64", 1, 8},
    {28, "F64", 1, 8},
    {29, "IQ1_M", 256, 256 / 8 + 256 / 16 + 256 / 32},
    {30, "BF16", 1, 2},
    {34, "TQ1_0", 256, 2 + 4 * 13},
    {35, "TQ2_0", 256, 2 + 64},
    {39, "MXFP4", 32, 1 + 16},
    {40, "NVFP4", 64, 4 + 32},
    {41, "Q1_0", 128, 2 + 16},
};

bool is_integer_type(GgufType type) {
  switch (type) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::UINT16:
    case GgufType::INT16:
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::UINT64:
    case GgufType::INT64:
      return true;
    default:
      return false;
  }
}

bool is_signed_type(GgufType type) {
  return type == GgufType::INT8 || type == GgufType::INT16 || type == GgufType::INT32 || type == GgufType::INT64;
}

bool is_float_type(GgufType type) { return type == GgufType::FLOAT32 || type == GgufType::FLOAT64; }

template <typename T>
T load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// Scalar at p (of a numeric or bool type) as signed/unsigned/double.
int64_t scalar_as_int(GgufType type, const uint8_t* p) {
  switch (type) {
    case GgufType::UINT8: return load<uint8_t>(p);
    case GgufType::INT8: return load<int8_t>(p);
    case GgufType::UINT16: return load<uint16_t>(p);
    case GgufType::INT16: return load<int16_t>(p);
    case GgufType::UINT32: return load<uint32_t>(p);
    case GgufType::INT32: return load<int32_t>(p);
    case GgufType::UINT64: {
      uint64_t v = load<uint64_t>(p);
      return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                                             : static_cast<int64_t>(v);
    }
    case GgufType::INT64: return load<int64_t>(p);
    case GgufType::BOOL: return load<uint8_t>(p);
    case GgufType::FLOAT32: return static_cast<int64_t>(load<float>(p));
    case GgufType::FLOAT64: return static_cast<int64_t>(load<double>(p));
    default: return 0;
  }
}

uint64_t scalar_as_uint(GgufType type, const uint8_t* p) {
  if (type == GgufType::UINT64) return load<uint64_t>(p);
  return static_cast<uint64_t>(scalar_as_int(type, p));
}

double scalar_as_double(GgufType type, const uint8_t* p) {
  switch (type) {
    case GgufType::FLOAT32: return load<float>(p);
    case GgufType::FLOAT64: return load<double>(p);
    case GgufType::UINT64: return static_cast<double>(load<uint64_t>(p));
    default: return static_cast<double>(scalar_as_int(type, p));
  }
}

// Text from the file quoted for a message: printable ASCII kept, anything else as \xNN, long
// text cut.
std::string quoted(std::string_view text) {
  constexpr size_t kMax = 80;
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < kMax; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (text.size() > kMax) out += "...";
  out += "'";
  return out;
}

std::string size_text(uint64_t bytes) { return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes"); }

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }
bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

}  // namespace

std::string gguf_type_name(GgufType type) {
  static const char* names[] = {"uint8", "int8", "uint16", "int16",  "uint32", "int32",  "float32",
                                "bool",  "string", "array", "uint64", "int64", "float64"};
  auto index = static_cast<uint32_t>(type);
  if (index < kGgufTypeCount) return names[index];
  return "type " + std::to_string(index);
}

size_t gguf_scalar_size(GgufType type) {
  switch (type) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::BOOL:
      return 1;
    case GgufType::UINT16:
    case GgufType::INT16:
      return 2;
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::FLOAT32:
      return 4;
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::FLOAT64:
      return 8;
    default:
      return 0;
  }
}

uint64_t ggml_row_bytes(uint32_t ggml_type, uint64_t elements) {
  const GgmlTypeInfo* info = ggml_type_info(ggml_type);
  if (!info) fail("ggml_row_bytes: unknown ggml type " + std::to_string(ggml_type));
  if (elements % info->block_size != 0)
    fail("ggml_row_bytes: " + std::to_string(elements) + " elements of type " + info->name +
         " are not a multiple of its block size " + std::to_string(info->block_size));
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(elements / info->block_size, uint64_t{info->type_size}, &bytes))
    fail("ggml_row_bytes: " + std::to_string(elements) + " elements of type " + info->name + " are too many to address");
  return bytes;
}

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  for (const auto& info : kGgmlTypes)
    if (info.id == type) return &info;
  return nullptr;
}

std::string ggml_type_name(uint32_t type) {
  if (const GgmlTypeInfo* info = ggml_type_info(type)) return info->name;
  return "unknown ggml type " + std::to_string(type);
}

// ---- values ----

bool GgufArray::is_integer() const { return is_integer_type(element_type); }
bool GgufArray::is_float() const { return is_float_type(element_type); }

int64_t GgufArray::int_at(uint64_t i) const {
  const size_t size = gguf_scalar_size(element_type);
  if (size == 0 || i >= count || (i + 1) * size > raw.size()) return 0;
  return scalar_as_int(element_type, raw.data() + i * size);
}

uint64_t GgufArray::uint_at(uint64_t i) const {
  const size_t size = gguf_scalar_size(element_type);
  if (size == 0 || i >= count || (i + 1) * size > raw.size()) return 0;
  return scalar_as_uint(element_type, raw.data() + i * size);
}

double GgufArray::float_at(uint64_t i) const {
  const size_t size = gguf_scalar_size(element_type);
  if (size == 0 || i >= count || (i + 1) * size > raw.size()) return 0;
  return scalar_as_double(element_type, raw.data() + i * size);
}

bool GgufValue::is_integer() const { return is_integer_type(type); }
bool GgufValue::is_float() const { return is_float_type(type); }

uint64_t GgufTensorInfo::elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;  // validated not to overflow when read
  return n;
}

// ---- parsing ----

class GgufParser {
 public:
  GgufParser(const std::string& path, const GgufFile::Options& options)
      : file_(path), options_(options) {
    out_.path_ = path;
    out_.file_bytes_ = file_.size();
    limit_ = std::min(out_.file_bytes_, options_.max_header_bytes);
  }

  GgufFile parse() {
    read_preamble();
    for (uint64_t k = 0; k < kv_count_; ++k) read_key_value(k);
    apply_alignment();
    // Containers grow with what is actually read: a count (checked against the bytes left) only
    // reserves a little up front, so a hostile count cannot allocate more than the file holds.
    out_.tensors_.reserve(std::min<uint64_t>(tensor_count_, kReserveCap));
    for (uint64_t t = 0; t < tensor_count_; ++t) read_tensor_info(t);
    out_.header_bytes_ = pos_;
    out_.data_offset_ = (pos_ + out_.alignment_ - 1) / out_.alignment_ * out_.alignment_;
    check_tensors();
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail_here(const std::string& problem) const { fail(out_.path_, problem); }

  uint64_t left() const { return limit_ - pos_; }

  // Fails unless n more bytes lie inside the file (and inside the header limit).
  void need(uint64_t n) const {
    if (n <= left()) return;
    if (limit_ < out_.file_bytes_ && n <= out_.file_bytes_ - pos_)
      fail_here("the GGUF header is larger than the " + size_text(options_.max_header_bytes) +
                " this reader accepts (while reading " + context_ + " at offset " + std::to_string(pos_) + ")");
    fail_here("file is truncated: " + context_ + " at offset " + std::to_string(pos_) + " needs " + size_text(n) +
              " but the file ends at byte " + std::to_string(out_.file_bytes_));
  }

  // Fails unless `count` items of at least `min_size` bytes each fit in what follows; `what`
  // describes the count for the message ("... cannot fit in the N bytes that follow").
  void check_fits(uint64_t count, uint64_t min_size, const std::string& what) const {
    uint64_t bytes = 0;
    const bool overflow = mul_overflows(count, min_size, &bytes);
    if (!overflow && bytes <= left()) return;
    if (!overflow && limit_ < out_.file_bytes_ && bytes <= out_.file_bytes_ - pos_)
      fail_here("the GGUF header is larger than the " + size_text(options_.max_header_bytes) +
                " this reader accepts (" + what + " at offset " + std::to_string(pos_) + ")");
    fail_here(what + " cannot fit in the " + size_text(out_.file_bytes_ - std::min(pos_, out_.file_bytes_)) +
              " that follow");
  }

  // Copies n bytes at the cursor (after need(n)) and advances.
  void read_bytes(void* out, uint64_t n) {
    need(n);
    auto* dst = static_cast<uint8_t*>(out);
    while (n > 0) {
      if (pos_ >= buffer_start_ && pos_ < buffer_start_ + buffer_.size()) {
        const uint64_t at = pos_ - buffer_start_;
        const uint64_t take = std::min<uint64_t>(n, buffer_.size() - at);
        std::memcpy(dst, buffer_.data() + at, take);
        dst += take;
        n -= take;
        pos_ += take;
      } else if (n >= kChunk) {
        file_.read_at(dst, n, pos_);
        pos_ += n;
        return;
      } else {
        const uint64_t fill = std::min<uint64_t>(kChunk, limit_ - pos_);
        buffer_.resize(fill);
        file_.read_at(buffer_.data(), fill, pos_);
        buffer_start_ = pos_;
      }
    }
  }

  template <typename T>
  T read_scalar() {
    T value;
    read_bytes(&value, sizeof(T));
    return value;
  }

  uint64_t read_u64() { return read_scalar<uint64_t>(); }
  uint32_t read_u32() { return read_scalar<uint32_t>(); }

  std::string read_string(const char* what) {
    const uint64_t at = pos_;
    const uint64_t length = read_u64();
    if (length > left()) {
      if (limit_ < out_.file_bytes_ && length <= out_.file_bytes_ - pos_)
        fail_here("the GGUF header is larger than the " + size_text(options_.max_header_bytes) +
                  " this reader accepts (" + what + " at offset " + std::to_string(at) + ")");
      fail_here(std::string(what) + " at offset " + std::to_string(at) + " has length " + std::to_string(length) +
                ", which runs past the end of the file (" + size_text(out_.file_bytes_ - pos_) + " left)");
    }
    std::string text(length, '\0');
    read_bytes(text.data(), length);
    return text;
  }

  GgufType read_type(const char* what) {
    const uint64_t at = pos_;
    const uint32_t id = read_u32();
    if (id >= kGgufTypeCount)
      fail_here(context_ + ": " + what + " at offset " + std::to_string(at) + " is " + std::to_string(id) +
                ", not a GGUF value type (0-12)");
    return static_cast<GgufType>(id);
  }

  void read_preamble() {
    context_ = "the magic";
    char magic[4];
    read_bytes(magic, 4);
    if (std::memcmp(magic, "GGUF", 4) != 0)
      fail_here("not a GGUF file: it starts with " + quoted(std::string_view(magic, 4)) + ", not 'GGUF'");
    context_ = "the version";
    const uint32_t version = read_u32();
    if (version == 1)
      fail_here("GGUF version 1 is not supported (it predates 64-bit counts); convert the file again with a current llama.cpp");
    if (version != 2 && version != 3) {
      std::string hint;
      if (__builtin_bswap32(version) == 2 || __builtin_bswap32(version) == 3) hint = " (a big-endian GGUF file?)";
      fail_here("GGUF version " + std::to_string(version) + " is not supported (only versions 2 and 3)" + hint);
    }
    out_.version_ = version;
    context_ = "the tensor count";
    tensor_count_ = read_u64();
    context_ = "the metadata key/value count";
    kv_count_ = read_u64();
    // Each key/value takes at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes; each
    // tensor info at least 8 + 1 (name) + 4 (n_dims) + 4 (type) + 8 (offset).
    constexpr uint64_t kMinKv = 14, kMinTensor = 25;
    check_fits(kv_count_, kMinKv, "metadata key/value count " + std::to_string(kv_count_) + " is too large: that many entries");
    // Both counts together (kv_count_ * kMinKv cannot overflow after the check above).
    uint64_t tensor_bytes = 0, total = ~uint64_t{0};
    if (!mul_overflows(tensor_count_, kMinTensor, &tensor_bytes)) add_overflows(kv_count_ * kMinKv, tensor_bytes, &total);
    check_fits(1, total,
               "tensor count " + std::to_string(tensor_count_) + " is too large: that many tensor infos (after " +
                   std::to_string(kv_count_) + " key/values)");
  }

  void read_key_value(uint64_t k) {
    context_ = "metadata key " + std::to_string(k);
    std::string key = read_string("metadata key name");
    if (key.empty()) fail_here("metadata key " + std::to_string(k) + " has an empty name");
    if (out_.key_index_.count(key)) fail_here("duplicate metadata key " + quoted(key));
    context_ = "the value of key " + quoted(key);
    GgufValue value;
    value.type = read_type("value type");
    read_value(value, 0);
    out_.key_index_.emplace(key, out_.metadata_.size());
    out_.metadata_.push_back(GgufKeyValue{std::move(key), std::move(value)});
  }

  void check_bool(uint8_t byte) const {
    if (byte > 1) fail_here(context_ + ": bool value " + std::to_string(byte) + " is neither 0 nor 1");
  }

  void read_value(GgufValue& value, uint32_t depth) {
    switch (value.type) {
      case GgufType::UINT8: value.u = read_scalar<uint8_t>(); break;
      case GgufType::UINT16: value.u = read_scalar<uint16_t>(); break;
      case GgufType::UINT32: value.u = read_scalar<uint32_t>(); break;
      case GgufType::UINT64: value.u = read_scalar<uint64_t>(); break;
      case GgufType::INT8: value.i = read_scalar<int8_t>(); break;
      case GgufType::INT16: value.i = read_scalar<int16_t>(); break;
      case GgufType::INT32: value.i = read_scalar<int32_t>(); break;
      case GgufType::INT64: value.i = read_scalar<int64_t>(); break;
      case GgufType::FLOAT32: value.f = read_scalar<float>(); break;
      case GgufType::FLOAT64: value.f = read_scalar<double>(); break;
      case GgufType::BOOL: {
        const uint8_t byte = read_scalar<uint8_t>();
        check_bool(byte);
        value.b = byte != 0;
        value.u = byte;
        break;
      }
      case GgufType::STRING: value.string = read_string("string value"); break;
      case GgufType::ARRAY: read_array(value.array, depth + 1); break;
    }
  }

  void read_array(GgufArray& array, uint32_t depth) {
    if (depth > options_.max_array_depth)
      fail_here(context_ + ": arrays nest deeper than " + std::to_string(options_.max_array_depth) + " levels");
    array.element_type = read_type("array element type");
    const uint64_t at = pos_;
    array.count = read_u64();
    const size_t scalar = gguf_scalar_size(array.element_type);
    // Smallest encoding of one element: a scalar's size, a string's length field, a nested
    // array's element type and count.
    const uint64_t min_element = scalar ? scalar : array.element_type == GgufType::STRING ? 8 : 12;
    check_fits(array.count, min_element,
               context_ + ": array of " + std::to_string(array.count) + " " + gguf_type_name(array.element_type) +
                   " elements (count at offset " + std::to_string(at) + ")");
    const uint64_t min_bytes = array.count * min_element;
    if (scalar) {
      // Read in chunks so memory follows the bytes that are really there.
      for (uint64_t done = 0; done < min_bytes;) {
        const uint64_t take = std::min<uint64_t>(min_bytes - done, kChunk);
        array.raw.resize(done + take);
        read_bytes(array.raw.data() + done, take);
        done += take;
      }
      if (array.element_type == GgufType::BOOL)
        for (uint8_t byte : array.raw) check_bool(byte);
    } else if (array.element_type == GgufType::STRING) {
      array.strings.reserve(std::min<uint64_t>(array.count, kReserveCap));
      for (uint64_t i = 0; i < array.count; ++i) array.strings.push_back(read_string("string array element"));
    } else {
      array.arrays.reserve(std::min<uint64_t>(array.count, 1024));
      for (uint64_t i = 0; i < array.count; ++i) {
        array.arrays.emplace_back();
        read_array(array.arrays.back(), depth + 1);
      }
    }
  }

  void apply_alignment() {
    context_ = "general.alignment";
    out_.alignment_ = kDefaultAlignment;
    const GgufValue* value = out_.find("general.alignment");
    if (!value) return;
    if (value->type != GgufType::UINT32)
      fail_here("general.alignment must be a uint32, not a " + gguf_type_name(value->type));
    if (value->u == 0 || (value->u & (value->u - 1)) != 0)
      fail_here("general.alignment " + std::to_string(value->u) + " is not a power of two");
    out_.alignment_ = value->u;
  }

  void read_tensor_info(uint64_t t) {
    context_ = "tensor info " + std::to_string(t);
    GgufTensorInfo info;
    info.name = read_string("tensor name");
    if (info.name.empty()) fail_here("tensor info " + std::to_string(t) + " has an empty name");
    if (out_.tensor_index_.count(info.name)) fail_here("duplicate tensor name " + quoted(info.name));
    const std::string where = "tensor " + quoted(info.name);
    context_ = "the info of " + where;
    const uint32_t n_dims = read_u32();
    if (n_dims > kMaxDims)
      fail_here(where + " has " + std::to_string(n_dims) + " dimensions; GGUF allows at most " + std::to_string(kMaxDims));
    info.dims.resize(n_dims);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      info.dims[d] = read_u64();
      if (info.dims[d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          mul_overflows(elements, info.dims[d], &elements) ||
          elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail_here(where + " has dimensions too large to address (element count overflows)");
    }
    info.type = read_u32();
    info.offset = read_u64();
    if (const GgmlTypeInfo* type = ggml_type_info(info.type)) {
      info.known_type = true;
      const uint64_t row = n_dims ? info.dims[0] : 1;
      if (row % type->block_size != 0)
        fail_here(where + " of type " + type->name + " has a first dimension of " + std::to_string(row) +
                  ", not a multiple of the type's block size " + std::to_string(type->block_size));
      if (mul_overflows(elements / type->block_size, type->type_size, &info.bytes))
        fail_here(where + " is too large to address (byte size overflows)");
    }
    out_.tensor_index_.emplace(info.name, out_.tensors_.size());
    out_.tensors_.push_back(std::move(info));
  }

  void check_tensors() {
    const uint64_t size = out_.file_bytes_;
    std::vector<const GgufTensorInfo*> sized;
    for (auto& info : out_.tensors_) {
      const std::string where = "tensor " + quoted(info.name);
      if (info.offset % out_.alignment_ != 0)
        fail_here(where + " has data offset " + std::to_string(info.offset) + ", not a multiple of the alignment " +
                  std::to_string(out_.alignment_));
      uint64_t end = 0;
      if (add_overflows(out_.data_offset_, info.offset, &info.file_offset) || info.file_offset > size ||
          add_overflows(info.file_offset, info.bytes, &end) || end > size) {
        fail_here(where + " (" + info.type_name() + ", " +
                  (info.known_type ? size_text(info.bytes) : std::string("unknown size")) + " at data offset " +
                  std::to_string(info.offset) + ") lies past the end of the file (" + size_text(size) +
                  ", data section from byte " + std::to_string(out_.data_offset_) + ")");
      }
      if (info.known_type && info.bytes > 0) sized.push_back(&info);
    }
    std::sort(sized.begin(), sized.end(),
              [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < sized.size(); ++i)
      if (sized[i]->offset < sized[i - 1]->offset + sized[i - 1]->bytes)
        fail_here("tensors " + quoted(sized[i - 1]->name) + " and " + quoted(sized[i]->name) + " overlap in the data section");
  }

  File file_;
  GgufFile::Options options_;
  GgufFile out_;
  uint64_t limit_ = 0;
  uint64_t pos_ = 0;
  uint64_t kv_count_ = 0;
  uint64_t tensor_count_ = 0;
  std::vector<uint8_t> buffer_;
  uint64_t buffer_start_ = 0;
  std::string context_;
};

GgufFile GgufFile::open(const std::string& path) { return open(path, Options{}); }

GgufFile GgufFile::open(const std::string& path, const Options& options) { return GgufParser(path, options).parse(); }

// ---- accessors ----

std::vector<std::string> GgufFile::keys() const {
  std::vector<std::string> out;
  out.reserve(metadata_.size());
  for (const auto& kv : metadata_) out.push_back(kv.key);
  return out;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = key_index_.find(std::string(key));
  return it == key_index_.end() ? nullptr : &metadata_[it->second].value;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

void GgufFile::key_error(std::string_view key, const std::string& problem) const {
  fail(path_, "metadata key " + quoted(key) + " " + problem);
}

const GgufValue& GgufFile::require(std::string_view key) const {
  const GgufValue* value = find(key);
  if (!value) key_error(key, "is missing");
  return *value;
}

namespace {

std::string type_of(const GgufValue& value) {
  if (value.type == GgufType::ARRAY) return "array of " + gguf_type_name(value.array.element_type);
  return gguf_type_name(value.type);
}

}  // namespace

const std::string& GgufFile::get_string(std::string_view key) const {
  const GgufValue& value = require(key);
  if (value.type != GgufType::STRING) key_error(key, "is a " + type_of(value) + ", not a string");
  return value.string;
}

uint64_t GgufFile::get_uint(std::string_view key) const {
  const GgufValue& value = require(key);
  if (!value.is_integer()) key_error(key, "is a " + type_of(value) + ", not an integer");
  if (is_signed_type(value.type)) {
    if (value.i < 0) key_error(key, "is " + std::to_string(value.i) + ", not a non-negative integer");
    return static_cast<uint64_t>(value.i);
  }
  return value.u;
}

int64_t GgufFile::get_int(std::string_view key) const {
  const GgufValue& value = require(key);
  if (!value.is_integer()) key_error(key, "is a " + type_of(value) + ", not an integer");
  if (is_signed_type(value.type)) return value.i;
  if (value.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    key_error(key, "is " + std::to_string(value.u) + ", too large for a signed 64-bit integer");
  return static_cast<int64_t>(value.u);
}

double GgufFile::get_float(std::string_view key) const {
  const GgufValue& value = require(key);
  if (!value.is_float()) key_error(key, "is a " + type_of(value) + ", not a float");
  // NaN and infinities pass every range check after this (NaN compares false): refuse them here.
  if (!std::isfinite(value.f)) key_error(key, "is " + std::to_string(value.f) + ", not a finite number");
  return value.f;
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& value = require(key);
  if (value.type != GgufType::BOOL) key_error(key, "is a " + type_of(value) + ", not a bool");
  return value.b;
}

const GgufArray& GgufFile::get_array(std::string_view key) const {
  const GgufValue& value = require(key);
  if (value.type != GgufType::ARRAY) key_error(key, "is a " + type_of(value) + ", not an array");
  return value.array;
}

const std::vector<std::string>& GgufFile::get_array_strings(std::string_view key) const {
  const GgufArray& array = get_array(key);
  if (array.element_type != GgufType::STRING)
    key_error(key, "is an array of " + gguf_type_name(array.element_type) + ", not of strings");
  return array.strings;
}

std::vector<double> GgufFile::get_array_floats(std::string_view key) const {
  const GgufArray& array = get_array(key);
  if (!array.is_float() && !array.is_integer())
    key_error(key, "is an array of " + gguf_type_name(array.element_type) + ", not of numbers");
  std::vector<double> out(array.count);
  for (uint64_t i = 0; i < array.count; ++i) out[i] = array.float_at(i);
  return out;
}

std::vector<int64_t> GgufFile::get_array_ints(std::string_view key) const {
  const GgufArray& array = get_array(key);
  if (!array.is_integer())
    key_error(key, "is an array of " + gguf_type_name(array.element_type) + ", not of integers");
  std::vector<int64_t> out(array.count);
  for (uint64_t i = 0; i < array.count; ++i) {
    if (array.element_type == GgufType::UINT64 &&
        array.uint_at(i) > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      key_error(key, "element " + std::to_string(i) + " is too large for a signed 64-bit integer");
    out[i] = array.int_at(i);
  }
  return out;
}

std::optional<std::string> GgufFile::find_string(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return get_string(key);
}

std::optional<uint64_t> GgufFile::find_uint(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return get_uint(key);
}

std::optional<int64_t> GgufFile::find_int(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return get_int(key);
}

std::optional<double> GgufFile::find_float(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return get_float(key);
}

std::optional<bool> GgufFile::find_bool(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return get_bool(key);
}

}  // namespace lw
