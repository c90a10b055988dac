// libFuzzer target: the input is a whole GGUF file. It is written to an in-memory file and opened
// with lw::GgufFile::open, so the real path is covered: bounded header reads, count and length
// checks, every metadata type, nested arrays, tensor infos and their bounds. A file that parses is
// then converted to a tokenizer (gguf_tokenizer_json / gguf_tokenizer_config), which must also
// either succeed or throw lw::Error, and to a model config (gguf_model_config); the first blocks
// of every tensor of a type the engine loads are dequantized.
// lw::Error is the expected outcome for bad input; any other exception, a sanitizer report, or a
// parsed header that breaks the documented invariants is a finding.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/error.h"
#include "scratch_file.h"
#include "format/dequantize.h"
#include "gguf/gguf.h"
#include "gguf/gguf_model.h"
#include "gguf/gguf_tokenizer.h"

namespace {

[[noreturn]] void invariant_broken(const char* what) {
  std::fprintf(stderr, "fuzz_gguf: invariant broken: %s\n", what);
  std::abort();
}

uint64_t element_count(const lw::GgufArray& array) {
  switch (array.element_type) {
    case lw::GgufType::STRING: return array.strings.size();
    case lw::GgufType::ARRAY: return array.arrays.size();
    default: return array.raw.size() / lw::gguf_scalar_size(array.element_type);
  }
}

void check_array(const lw::GgufArray& array, uint32_t depth) {
  if (depth > 8) invariant_broken("arrays nested deeper than the limit");
  if (static_cast<uint32_t>(array.element_type) >= lw::kGgufTypeCount) invariant_broken("array of an invalid type");
  if (element_count(array) != array.count) invariant_broken("array count differs from the elements kept");
  for (const auto& inner : array.arrays) check_array(inner, depth + 1);
}

void check(const lw::GgufFile& file, size_t input_size) {
  if (file.file_bytes() != input_size) invariant_broken("file_bytes differs from the input size");
  if (file.version() != 2 && file.version() != 3) invariant_broken("unsupported version accepted");
  const uint64_t alignment = file.alignment();
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) invariant_broken("alignment not a power of two");
  if (file.header_bytes() > file.file_bytes()) invariant_broken("header ends past the file");
  if (file.data_offset() < file.header_bytes() || file.data_offset() % alignment != 0 ||
      file.data_offset() - file.header_bytes() >= alignment)
    invariant_broken("data_offset is not the header end rounded up to the alignment");
  for (const auto& kv : file.metadata()) {
    if (kv.key.empty()) invariant_broken("empty key accepted");
    if (file.find(kv.key) != &kv.value) invariant_broken("find() misses a parsed key");
    if (static_cast<uint32_t>(kv.value.type) >= lw::kGgufTypeCount) invariant_broken("value of an invalid type");
    if (kv.value.type == lw::GgufType::ARRAY) check_array(kv.value.array, 1);
  }
  std::vector<const lw::GgufTensorInfo*> sized;
  for (const auto& t : file.tensors()) {
    if (t.name.empty()) invariant_broken("empty tensor name accepted");
    if (file.find_tensor(t.name) != &t) invariant_broken("find_tensor() misses a parsed tensor");
    if (t.dims.size() > 4) invariant_broken("more than 4 dimensions accepted");
    if (t.offset % alignment != 0) invariant_broken("misaligned tensor accepted");
    if (t.file_offset != file.data_offset() + t.offset) invariant_broken("file_offset is not data_offset + offset");
    if (t.file_offset > file.file_bytes()) invariant_broken("tensor starts past the end of the file");
    const lw::GgmlTypeInfo* type = lw::ggml_type_info(t.type);
    if (t.known_type != (type != nullptr)) invariant_broken("known_type does not match the type table");
    if (type) {
      if (t.bytes > file.file_bytes() - t.file_offset) invariant_broken("tensor data past the end of the file");
      const uint64_t row = t.dims.empty() ? 1 : t.dims[0];
      if (row % type->block_size != 0) invariant_broken("row not a multiple of the block size");
      if (t.elements() / type->block_size * type->type_size != t.bytes) invariant_broken("tensor bytes miscomputed");
      if (t.bytes > 0) sized.push_back(&t);
    } else if (t.bytes != 0) {
      invariant_broken("a size for an unknown type");
    }
  }
  std::sort(sized.begin(), sized.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < sized.size(); ++i)
    if (sized[i]->offset < sized[i - 1]->offset + sized[i - 1]->bytes) invariant_broken("overlapping tensors accepted");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ScratchFile scratch("fuzz_gguf");
  scratch.write(data, size);
  try {
    const lw::GgufFile file = lw::GgufFile::open(scratch.path);
    check(file, size);
    if (file.has("tokenizer.ggml.model")) {
      try {
        const nlohmann::json tokenizer = lw::gguf_tokenizer_json(file);
        const nlohmann::json config = lw::gguf_tokenizer_config(file);
        if (!tokenizer.is_object() || !tokenizer.contains("model")) invariant_broken("tokenizer.json without a model");
        if (!config.is_object()) invariant_broken("tokenizer config is not an object");
      } catch (const lw::Error&) {
        // A vocabulary the converter refuses, with a message.
      }
    }
    try {
      const nlohmann::json config = lw::gguf_model_config(file);
      if (!config.is_object() || !config.contains("hidden_size")) invariant_broken("model config without hidden_size");
    } catch (const lw::Error&) {
      // Not a llama model we run, with a message.
    }
    for (const auto& t : file.tensors()) {
      if (!t.known_type || !lw::ggml_type_dequantizable(t.type) || t.bytes == 0) continue;
      const lw::GgmlTypeInfo* type = lw::ggml_type_info(t.type);
      const uint64_t blocks = std::min<uint64_t>(t.bytes / type->type_size, 64);
      std::vector<float> out(blocks * type->block_size);
      lw::dequantize_row(t.type, data + t.file_offset, out.size(), out.data());
    }
  } catch (const lw::Error&) {
    // Rejected with a message: the expected outcome for bad input.
  }
  return 0;
}
