#include "checkpoint/checkpoint.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <cstring>
#include <map>
#include <sstream>

#include "common/error.h"
#include "common/file.h"
#include "format/manifest.h"
#include "format/safetensors.h"
#include "gguf/dequantize.h"
#include "gguf/gguf.h"
#include "gguf/gguf_model.h"

namespace lw {
namespace fs = std::filesystem;

uint64_t UnitSource::bytes() const {
  uint64_t total = 0;
  for (const auto& tensor : tensors) total += tensor.bytes;
  return total;
}

uint64_t UnitSource::loaded_bytes() const {
  uint64_t total = 0;
  for (const auto& tensor : tensors) total += tensor.loaded_bytes();
  return total;
}

uint64_t Checkpoint::parameter_count() const {
  uint64_t count = 0;
  for (const auto& unit : units) {
    if (unit.recipe.kind == UnitKind::Head && config.tie_word_embeddings) {
      count += static_cast<uint64_t>(config.hidden_size);  // the final norm; the head is the embedding
      continue;
    }
    for (const auto& tensor : unit.tensors) count += tensor.rows() * tensor.row_elements();
  }
  return count;
}

void decode_rows(const TensorLocation& tensor, char* region, uint64_t rows) {
  if (tensor.quantized)
    dequantize_in_place(*tensor.quantized, reinterpret_cast<float*>(region), rows * tensor.row_elements());
  if (tensor.rotary_heads == 0) return;
  // Rotary order is by output feature: the rows of a matrix, the elements of a bias.
  const uint64_t features = tensor.shape.size() == 2 ? rows : tensor.row_elements();
  const uint64_t feature_bytes = rows * tensor.loaded_row_bytes() / features;
  const uint64_t head_features = tensor.shape.size() == 2 ? tensor.row_granularity()
                                                         : features / static_cast<uint64_t>(tensor.rotary_heads);
  const uint64_t half = head_features / 2;
  std::vector<char> head(head_features * feature_bytes);
  for (uint64_t first = 0; first < features; first += head_features) {
    char* base = region + first * feature_bytes;
    std::memcpy(head.data(), base, head.size());
    // Stored feature 2i + j is Hugging Face feature j * half + i.
    for (uint64_t i = 0; i < half; i++)
      for (uint64_t j = 0; j < 2; j++)
        std::memcpy(base + (j * half + i) * feature_bytes, head.data() + (2 * i + j) * feature_bytes, feature_bytes);
  }
}

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); i++) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// Finds the tensors of every unit in already-opened safetensors files.
class TensorIndex {
 public:
  TensorIndex(Checkpoint& checkpoint) : checkpoint_(checkpoint) {}

  int add_file(const std::string& path) {
    auto known = file_index_.find(path);
    if (known != file_index_.end()) return known->second;
    opened_.push_back(open_safetensors(path));
    int index = static_cast<int>(checkpoint_.files.size());
    checkpoint_.files.push_back(path);
    file_index_[path] = index;
    return index;
  }

  const SafetensorsFile& file(int index) const { return opened_[static_cast<size_t>(index)]; }

  // Locates `name` in file `index`, checking dtype and shape against the recipe.
  TensorLocation locate(int index, const std::string& name, const TensorRecipe& recipe) const {
    const SafetensorsFile& file = opened_[static_cast<size_t>(index)];
    const SafetensorsTensor* tensor = file.header.find(name);
    if (!tensor) fail(file.path, "missing tensor '" + name + "'");
    auto dtype = dtype_from_name(tensor->dtype_name);
    if (!dtype)
      fail(file.path, "tensor '" + name + "' has dtype " + tensor->dtype_name + "; supported: F32, F16, BF16");
    if (tensor->shape != recipe.shape)
      fail(file.path, "tensor '" + name + "' has shape " + shape_text(tensor->shape) + " but config.json implies " +
                          shape_text(recipe.shape));
    return {name, index, file.data_offset + tensor->begin, tensor->end - tensor->begin, *dtype, tensor->shape, std::nullopt, 0};
  }

 private:
  Checkpoint& checkpoint_;
  std::vector<SafetensorsFile> opened_;
  std::map<std::string, int> file_index_;
};

void open_huggingface(Checkpoint& checkpoint, const fs::path& dir) {
  const std::string config_path = (dir / "config.json").string();
  checkpoint.raw_config = read_json_file(config_path);
  if (fs::exists(dir / "generation_config.json"))
    checkpoint.raw_generation_config = read_json_file((dir / "generation_config.json").string());
  checkpoint.config = parse_model_config(checkpoint.raw_config, checkpoint.raw_generation_config, config_path);

  TensorIndex index(checkpoint);
  std::map<std::string, int> file_of_tensor;
  const fs::path single = dir / "model.safetensors", sharded = dir / "model.safetensors.index.json";
  if (fs::exists(sharded)) {
    nlohmann::json json = read_json_file(sharded.string());
    if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object())
      fail(sharded.string(), "has no \"weight_map\" object");
    for (const auto& [name, file] : json["weight_map"].items()) {
      if (!file.is_string()) fail(sharded.string(), "weight_map entry for '" + name + "' is not a file name");
      std::string file_name = file.get<std::string>();
      if (file_name.find('/') != std::string::npos || file_name.empty() || file_name[0] == '.')
        fail(sharded.string(), "weight_map names '" + file_name + "', which is not a plain file name");
      file_of_tensor[name] = index.add_file((dir / file_name).string());
    }
  } else if (fs::exists(single)) {
    int file = index.add_file(single.string());
    for (const auto& tensor : index.file(file).header.tensors) file_of_tensor[tensor.name] = file;
  } else {
    fail(dir.string(), "no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are supported)");
  }

  for (auto& recipe : llama_units(checkpoint.config)) {
    UnitSource unit{recipe, {}};
    for (const auto& tensor : recipe.tensors) {
      std::string name = tensor.name;
      // A tied head is the embedding matrix; some tied checkpoints also store lm_head.weight.
      if (tensor.role == Role::LmHead && checkpoint.config.tie_word_embeddings && !file_of_tensor.count(name))
        name = "model.embed_tokens.weight";
      auto where = file_of_tensor.find(name);
      if (where == file_of_tensor.end())
        fail(fs::exists(sharded) ? sharded.string() : single.string(), "missing tensor '" + name + "'");
      unit.tensors.push_back(index.locate(where->second, name, tensor));
    }
    checkpoint.units.push_back(std::move(unit));
  }
}

void open_split(Checkpoint& checkpoint, const fs::path& dir) {
  const std::string manifest_path = (dir / "manifest.json").string();
  Manifest manifest = parse_manifest(read_file_text(manifest_path), manifest_path);
  checkpoint.raw_config = manifest.config;
  checkpoint.raw_generation_config = manifest.generation_config;
  checkpoint.split_dtype = manifest.dtype;
  checkpoint.config = parse_model_config(manifest.config, manifest.generation_config, manifest_path + " (config)");

  TensorIndex index(checkpoint);
  auto recipes = llama_units(checkpoint.config);
  if (manifest.units.size() != recipes.size())
    fail(manifest_path, "lists " + std::to_string(manifest.units.size()) + " units but the config needs " +
                            std::to_string(recipes.size()));
  for (size_t u = 0; u < recipes.size(); u++) {
    const ManifestUnit& listed = manifest.units[u];
    if (listed.name != recipes[u].name)
      fail(manifest_path, "unit " + std::to_string(u) + " is '" + listed.name + "', expected '" + recipes[u].name + "'");
    const std::string unit_path = (dir / listed.file).string();
    struct stat info {};
    if (stat(unit_path.c_str(), &info) != 0) fail(unit_path, "missing (the split is incomplete; run layerwise split again)");
    if (static_cast<uint64_t>(info.st_size) != listed.bytes)
      fail(unit_path, "is " + std::to_string(info.st_size) + " bytes but the manifest says " + std::to_string(listed.bytes) +
                          " (modified or incomplete; check with layerwise split --verify)");
    int file_index = index.add_file(unit_path);
    checkpoint.file_xxh3.resize(checkpoint.files.size());
    checkpoint.file_xxh3[static_cast<size_t>(file_index)] = listed.xxh3;
    UnitSource unit{recipes[u], {}};
    for (const auto& tensor : recipes[u].tensors) unit.tensors.push_back(index.locate(file_index, tensor.name, tensor));
    checkpoint.units.push_back(std::move(unit));
  }
}

void open_gguf(Checkpoint& checkpoint, const std::string& path) {
  const GgufFile file = GgufFile::open(path);
  checkpoint.raw_config = gguf_model_config(file);
  checkpoint.raw_generation_config = gguf_generation_config(file);
  checkpoint.config = parse_model_config(checkpoint.raw_config, checkpoint.raw_generation_config, path);
  checkpoint.files = {path};
  constexpr uint32_t kF32 = 0, kF16 = 1, kBF16 = 30;  // ggml type numbers
  for (auto& recipe : llama_units(checkpoint.config)) {
    UnitSource unit{recipe, {}};
    for (const auto& wanted : recipe.tensors) {
      std::string hf_name = wanted.name;
      if (wanted.role == Role::LmHead && checkpoint.config.tie_word_embeddings) hf_name = "model.embed_tokens.weight";
      const std::string name = gguf_tensor_name(hf_name).value_or(hf_name);
      const GgufTensorInfo* info = file.find_tensor(name);
      if (!info) fail(path, "missing tensor '" + name + "' (" + wanted.name + ")");
      std::vector<int64_t> shape(info->dims.rbegin(), info->dims.rend());
      if (shape != wanted.shape)
        fail(path, "tensor '" + name + "' has shape " + shape_text(shape) + " but the metadata implies " + shape_text(wanted.shape));
      TensorLocation location{name, 0, info->file_offset, info->bytes, DType::F32, shape, std::nullopt, 0};
      if (info->type == kF16) {
        location.dtype = DType::F16;
      } else if (info->type == kBF16) {
        location.dtype = DType::BF16;
      } else if (info->type != kF32) {
        if (!info->known_type || !ggml_type_dequantizable(info->type))
          fail(path, "tensor '" + name + "' has type " + info->type_name() +
                         ", which this build cannot load (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K)");
        location.quantized = info->type;
      }
      location.rotary_heads = gguf_rotary_heads(name, checkpoint.raw_config);
      if (location.rotary_heads > 0 && location.rows() > 1 && location.rows() % static_cast<uint64_t>(2 * location.rotary_heads) != 0)
        fail(path, "tensor '" + name + "' rows do not divide into " + std::to_string(location.rotary_heads) + " heads");
      unit.tensors.push_back(std::move(location));
    }
    checkpoint.units.push_back(std::move(unit));
  }
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint checkpoint;
  checkpoint.path = path;
  fs::path dir(path);
  std::error_code error;
  if (!fs::exists(dir, error)) fail(path, "no such file or directory");
  if (fs::is_regular_file(dir, error)) {
    checkpoint.format = Format::Gguf;
    open_gguf(checkpoint, path);
    return checkpoint;
  }
  if (!fs::is_directory(dir, error))
    fail(path, "not a model (expected a Hugging Face folder, a layerwise split folder or a GGUF file)");
  if (fs::exists(dir / "manifest.json")) {
    checkpoint.format = Format::Split;
    open_split(checkpoint, dir);
  } else if (fs::exists(dir / "config.json")) {
    open_huggingface(checkpoint, dir);
  } else {
    fail(path, "no config.json (Hugging Face checkpoint) or manifest.json (layerwise split) in this directory");
  }
  return checkpoint;
}

}  // namespace lw
