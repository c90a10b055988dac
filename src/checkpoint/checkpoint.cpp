#include "checkpoint/checkpoint.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/error.h"
#include "common/file.h"
#include "format/manifest.h"
#include "format/safetensors.h"

namespace lw {
namespace fs = std::filesystem;

uint64_t UnitSource::bytes() const {
  uint64_t total = 0;
  for (const auto& tensor : tensors) total += tensor.bytes;
  return total;
}

uint64_t Checkpoint::parameter_count() const {
  uint64_t count = 0;
  for (const auto& unit : units) {
    if (unit.recipe.kind == UnitKind::Head && config.tie_word_embeddings) {
      count += static_cast<uint64_t>(config.hidden_size);  // the final norm; the head is the embedding
      continue;
    }
    for (const auto& tensor : unit.tensors) count += tensor.bytes / dtype_size(tensor.dtype);
  }
  return count;
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
    return {name, index, file.data_offset + tensor->begin, tensor->end - tensor->begin, *dtype, tensor->shape};
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
    UnitSource unit{recipes[u], {}};
    for (const auto& tensor : recipes[u].tensors) unit.tensors.push_back(index.locate(file_index, tensor.name, tensor));
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
  if (!fs::is_directory(dir, error)) fail(path, "not a model directory (expected a Hugging Face folder or a layerwise split folder)");
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
