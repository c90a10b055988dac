// Opens a model for streaming: a Hugging Face directory (model.safetensors or a sharded index),
// a directory written by `layerwise split`, or a GGUF file. Only headers are read here; the
// result says, for every streaming unit, where each of its tensors lies on disk and how its
// stored bytes become the weights the kernels use.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "format/dtype.h"
#include "model/config.h"
#include "model/llama.h"

namespace lw {

struct TensorLocation {
  std::string name;  // name in its file
  int file = -1;     // index into Checkpoint::files
  uint64_t offset = 0;  // absolute byte offset in the file
  uint64_t bytes = 0;   // stored size
  DType dtype = DType::F32;    // in memory, once loaded
  std::vector<int64_t> shape;  // Hugging Face order: [rows, row length] or [length]
  // As stored in the file. Matrices keep their blocks (stored == dtype); a vector stored in
  // blocks (a rare GGUF norm or bias) is dequantized to F32 when loaded.
  DType stored = DType::F32;
  // GGUF only: rows stored in llama.cpp's rotary order for this many heads (attn_q, attn_k);
  // loading restores the Hugging Face order.
  int rotary_heads = 0;

  uint64_t rows() const { return shape.size() == 2 ? static_cast<uint64_t>(shape[0]) : 1; }
  uint64_t row_elements() const { return static_cast<uint64_t>(shape.back()); }
  uint64_t stored_row_bytes() const { return bytes / rows(); }
  uint64_t loaded_row_bytes() const { return dtype_row_bytes(dtype, row_elements()); }
  uint64_t loaded_bytes() const { return rows() * loaded_row_bytes(); }
  bool needs_decoding() const { return stored != dtype || rotary_heads > 0; }
  // Rows that must be decoded together: a whole head for rotary tensors, else 1.
  uint64_t row_granularity() const { return rotary_heads > 0 ? rows() / static_cast<uint64_t>(rotary_heads) : 1; }
};

// Turns stored rows into loaded rows in place. `region` has room for the loaded bytes of `rows`
// rows (a multiple of row_granularity()) and holds their stored bytes at its end.
void decode_rows(const TensorLocation& tensor, char* region, uint64_t rows);

struct UnitSource {
  UnitRecipe recipe;
  std::vector<TensorLocation> tensors;  // parallel to recipe.tensors
  uint64_t bytes() const;         // stored
  uint64_t loaded_bytes() const;  // in memory
};

struct Checkpoint {
  enum class Format { HuggingFace, Split, Gguf };
  Format format = Format::HuggingFace;
  std::string path;
  nlohmann::json raw_config;             // config.json as written (built from the metadata for GGUF)
  nlohmann::json raw_generation_config;  // null when absent
  ModelConfig config;
  std::vector<std::string> files;  // every file tensors are read from
  // Parallel to files: the XXH3-64 of the whole file that a split's manifest records (checked
  // when the streamer first reads the file); nullopt for other checkpoints, which carry none.
  std::vector<std::optional<uint64_t>> file_xxh3;
  std::vector<UnitSource> units;   // embed, layer.0 .., head (the recipe order)
  std::string split_dtype;         // for split directories: the manifest's dtype
  // Tensors present but unused (printed on stderr by open() as well).
  std::vector<std::string> warnings;

  // Throws lw::Error naming the offending file.
  static Checkpoint open(const std::string& path);
  // Throws lw::Error unless `path` names something open() accepts the kind of: a file, or a
  // directory holding config.json or manifest.json (an interrupted split is named as such).
  // Checked first, so that a bad path is reported before any other missing file.
  static void check_path(const std::string& path);
  uint64_t parameter_count() const;
  const UnitSource& embed() const { return units.front(); }
  const UnitSource& head() const { return units.back(); }
};

}  // namespace lw
