// Opens a model for streaming: a Hugging Face directory (model.safetensors or a sharded index)
// or a directory written by `layerwise split`. Only headers are read here; the result says, for
// every streaming unit, where each of its tensors lies on disk.
#pragma once
#include <cstdint>
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
  uint64_t bytes = 0;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
};

struct UnitSource {
  UnitRecipe recipe;
  std::vector<TensorLocation> tensors;  // parallel to recipe.tensors
  uint64_t bytes() const;
};

struct Checkpoint {
  enum class Format { HuggingFace, Split };
  Format format = Format::HuggingFace;
  std::string path;
  nlohmann::json raw_config;             // config.json as written
  nlohmann::json raw_generation_config;  // null when absent
  ModelConfig config;
  std::vector<std::string> files;  // every file tensors are read from
  std::vector<UnitSource> units;   // embed, layer.0 .., head (the recipe order)
  std::string split_dtype;         // for split directories: the manifest's dtype

  // Throws lw::Error naming the offending file.
  static Checkpoint open(const std::string& path);
  uint64_t parameter_count() const;
  const UnitSource& embed() const { return units.front(); }
  const UnitSource& head() const { return units.back(); }
};

}  // namespace lw
