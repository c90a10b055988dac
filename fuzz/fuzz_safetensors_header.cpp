// libFuzzer target: the input is a whole safetensors file (8-byte little-endian header length,
// JSON header, data). It is written to an in-memory file and opened with lw::open_safetensors, so
// the real path is covered: length read, bounds checks, header parse and validation.
// lw::Error is the expected outcome for bad input; any other exception, a sanitizer report, or
// a parsed header that breaks the documented invariants is a finding.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "scratch_file.h"
#include "format/safetensors.h"

namespace {

[[noreturn]] void invariant_broken(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors_header: invariant broken: %s\n", what);
  std::abort();
}

void check(const lw::SafetensorsFile& file, size_t input_size) {
  if (file.file_bytes != input_size) invariant_broken("file_bytes differs from the input size");
  if (file.data_offset < 8 || file.data_offset > file.file_bytes) invariant_broken("data_offset outside the file");
  const uint64_t data_bytes = file.file_bytes - file.data_offset;
  const lw::SafetensorsTensor* previous = nullptr;
  uint64_t furthest_end = 0;
  for (const auto& tensor : file.header.tensors) {
    const std::optional<lw::DType> blocks = lw::dtype_from_name(tensor.dtype_name);
    const bool blocked = blocks && lw::dtype_is_quantized(*blocks);
    if (tensor.element_size == 0 && !blocked) invariant_broken("tensor with element_size 0 and no block type");
    if (tensor.begin > tensor.end || tensor.end > data_bytes) invariant_broken("tensor range outside the data");
    const uint64_t row = tensor.shape.empty() ? 1 : static_cast<uint64_t>(tensor.shape.back());
    const uint64_t expected = !blocked ? tensor.elements() * tensor.element_size
                              : row == 0 ? 0
                                         : tensor.elements() / row * lw::dtype_row_bytes(*blocks, row);
    if (expected != tensor.end - tensor.begin) invariant_broken("tensor byte size does not match shape x dtype");
    for (int64_t dim : tensor.shape)
      if (dim < 0) invariant_broken("negative dimension");
    if (previous && previous->begin > tensor.begin) invariant_broken("tensors not sorted by begin");
    if (tensor.end > tensor.begin) {
      if (tensor.begin < furthest_end) invariant_broken("overlapping tensors accepted");
      if (tensor.end > furthest_end) furthest_end = tensor.end;
    }
    if (file.header.find(tensor.name) == nullptr) invariant_broken("find() misses a parsed tensor");
    previous = &tensor;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ScratchFile scratch("fuzz_safetensors");
  scratch.write(data, size);
  try {
    lw::SafetensorsFile file = lw::open_safetensors(scratch.path);
    check(file, size);
  } catch (const lw::Error&) {
    // Rejected with a message: the expected outcome for bad input.
  }
  return 0;
}
