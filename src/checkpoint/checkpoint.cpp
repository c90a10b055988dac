#include "checkpoint/checkpoint.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/file.h"
#include "format/manifest.h"
#include "format/safetensors.h"
#include "format/dequantize.h"
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
  if (tensor.stored != tensor.dtype)  // blocks to F32 (a vector)
    dequantize_in_place(dtype_format(tensor.stored).ggml_type, reinterpret_cast<float*>(region), rows * tensor.row_elements());
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

// A tensor a checkpoint holds, and the file it is in.
struct StoredTensor {
  std::string name, file;
};

// The layer of "PREFIX<digits>.rest", or -1.
int layer_of(const std::string& name, const std::string& layer_prefix) {
  if (name.compare(0, layer_prefix.size(), layer_prefix) != 0) return -1;
  const size_t dot = name.find('.', layer_prefix.size());
  const std::string digits = name.substr(layer_prefix.size(), dot == std::string::npos ? std::string::npos : dot - layer_prefix.size());
  if (dot == std::string::npos || digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos)
    return -1;
  return std::stoi(digits);
}

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : separator) + item;
  return text;
}

// Tensors the configuration does not use. Layers past its layer count mean the configuration
// and the weights disagree (the model would run on its first layers only, silently wrong): an
// error. Anything else is ignored with a warning, as transformers warns about and ignores
// unexpected keys; rotary_emb.inv_freq (a buffer old Llama checkpoints saved) it drops without
// a word, and so do we.
void check_unused_tensors(Checkpoint& checkpoint, const std::vector<StoredTensor>& stored, const std::string& layer_prefix,
                          const std::string& layer_count_source) {
  std::set<std::string> used;
  for (const auto& unit : checkpoint.units)
    for (const auto& tensor : unit.tensors) used.insert(tensor.name);
  std::map<int, int> extra_layers;  // layer -> tensors
  std::set<std::string> extra_layer_files;
  std::map<std::string, std::vector<std::string>> ignored;  // file -> tensors
  int extra_layer_tensors = 0;
  const std::string inv_freq = "rotary_emb.inv_freq";
  for (const auto& tensor : stored) {
    if (used.count(tensor.name)) continue;
    const int layer = layer_of(tensor.name, layer_prefix);
    if (layer >= checkpoint.config.num_layers) {
      extra_layers[layer]++;
      extra_layer_files.insert(tensor.file);
      extra_layer_tensors++;
    } else if (!(tensor.name.size() >= inv_freq.size() &&
                 tensor.name.compare(tensor.name.size() - inv_freq.size(), inv_freq.size(), inv_freq) == 0)) {
      ignored[tensor.file].push_back(tensor.name);
    }
  }
  if (!extra_layers.empty()) {
    std::vector<std::string> layers;
    for (const auto& [layer, count] : extra_layers) layers.push_back(layer_prefix + std::to_string(layer) + ".*");
    if (layers.size() > 4) layers = {layers.front(), layers[1], "...", layers.back()};
    fail(join({extra_layer_files.begin(), extra_layer_files.end()}, ", "),
         std::to_string(extra_layer_tensors) + " tensors the configuration does not use: " + join(layers, " ") + " (" +
             layer_count_source + " " + std::to_string(checkpoint.config.num_layers) +
             "; the weights have more layers than the configuration says, so it would run on the first " +
             std::to_string(checkpoint.config.num_layers) + " only)");
  }
  for (auto& [file, names] : ignored) {
    const size_t count = names.size();
    if (names.size() > 6) names.resize(6), names.push_back("...");
    checkpoint.warnings.push_back(file + ": ignoring " + std::to_string(count) + " tensor" + (count == 1 ? "" : "s") +
                                  " the model does not use: " + join(names, ", "));
  }
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
    if (!dtype || (dtype_is_quantized(*dtype) && checkpoint_.format != Checkpoint::Format::Split))
      fail(file.path, "tensor '" + name + "' has dtype " + tensor->dtype_name + "; supported: F32, F16, BF16" +
                          (checkpoint_.format == Checkpoint::Format::Split ? " and the block types " + dtype_names() : ""));
    if (dtype_is_quantized(*dtype) && recipe.shape.size() != 2)
      fail(file.path, "tensor '" + name + "' is a vector stored as " + tensor->dtype_name + "; vectors are stored as floats");
    if (tensor->shape != recipe.shape)
      fail(file.path, "tensor '" + name + "' has shape " + shape_text(tensor->shape) + " but config.json implies " +
                          shape_text(recipe.shape));
    return {name, index, file.data_offset + tensor->begin, tensor->end - tensor->begin, *dtype, tensor->shape, *dtype, 0};
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
  checkpoint.config = parse_model_config(checkpoint.raw_config, checkpoint.raw_generation_config, config_path,
                                         (dir / "generation_config.json").string());

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
  std::vector<StoredTensor> stored;
  for (const auto& [name, file] : file_of_tensor) stored.push_back({name, checkpoint.files[static_cast<size_t>(file)]});
  check_unused_tensors(checkpoint, stored, "model.layers.", config_path + " says num_hidden_layers");
}

void open_split(Checkpoint& checkpoint, const fs::path& dir) {
  const std::string manifest_path = (dir / "manifest.json").string();
  Manifest manifest = parse_manifest(read_file_text(manifest_path), manifest_path);
  checkpoint.raw_config = manifest.config;
  checkpoint.raw_generation_config = manifest.generation_config;
  checkpoint.split_dtype = manifest.dtype;
  checkpoint.config = parse_model_config(manifest.config, manifest.generation_config, manifest_path + " (config)",
                                         manifest_path + " (generation_config)");

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
    // The manifest's per-tensor types (splits since --quantize) must be what the file holds.
    if (!listed.tensors.empty()) {
      if (listed.tensors.size() != unit.tensors.size())
        fail(manifest_path, "unit file '" + listed.file + "' lists " + std::to_string(listed.tensors.size()) +
                                " tensor types but the unit has " + std::to_string(unit.tensors.size()) + " tensors");
      for (const auto& [name, type] : listed.tensors) {
        const TensorLocation* found = nullptr;
        for (const auto& tensor : unit.tensors)
          if (tensor.name == name) found = &tensor;
        if (!found)
          fail(manifest_path, "unit file '" + listed.file + "' lists tensor '" + name + "', which the unit does not hold");
        if (type != dtype_name(found->stored))
          fail(unit_path, "tensor '" + name + "' is " + dtype_name(found->stored) + " but the manifest says " + type);
      }
    }
    checkpoint.units.push_back(std::move(unit));
  }
  std::vector<StoredTensor> stored;
  for (size_t f = 0; f < checkpoint.files.size(); f++)
    for (const auto& tensor : index.file(static_cast<int>(f)).header.tensors) stored.push_back({tensor.name, checkpoint.files[f]});
  check_unused_tensors(checkpoint, stored, "model.layers.", manifest_path + " (its config) says num_hidden_layers");
}

void open_gguf(Checkpoint& checkpoint, const std::string& path) {
  const GgufFile file = GgufFile::open(path);
  checkpoint.raw_config = gguf_model_config(file);
  checkpoint.raw_generation_config = gguf_generation_config(file);
  checkpoint.config = parse_model_config(checkpoint.raw_config, checkpoint.raw_generation_config, path);
  checkpoint.files = {path};
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
      const std::optional<DType> stored = dtype_from_ggml(info->type);
      if (!stored)
        fail(path, "tensor '" + name + "' has type " + info->type_name() + ", which this build cannot load (supported: " +
                       dtype_names() + ")");
      // Matrices keep their blocks; a vector in blocks is dequantized when loaded.
      const DType loaded = dtype_is_quantized(*stored) && shape.size() != 2 ? DType::F32 : *stored;
      TensorLocation location{name, 0, info->file_offset, info->bytes, loaded, shape, *stored, 0};
      location.rotary_heads = gguf_rotary_heads(name, checkpoint.raw_config);
      if (location.rotary_heads > 0 && location.rows() > 1 && location.rows() % static_cast<uint64_t>(2 * location.rotary_heads) != 0)
        fail(path, "tensor '" + name + "' rows do not divide into " + std::to_string(location.rotary_heads) + " heads");
      unit.tensors.push_back(std::move(location));
    }
    checkpoint.units.push_back(std::move(unit));
  }
  std::vector<StoredTensor> stored;
  for (const auto& tensor : file.tensors()) stored.push_back({tensor.name, path});
  check_unused_tensors(checkpoint, stored, "blk.", "its metadata says llama.block_count");
}

}  // namespace

void Checkpoint::check_path(const std::string& path) {
  const fs::path dir(path);
  std::error_code error;
  if (!fs::exists(dir, error)) fail(path, "no such file or directory");
  if (fs::is_regular_file(dir, error)) return;
  if (!fs::is_directory(dir, error))
    fail(path, "not a model (expected a Hugging Face folder, a layerwise split folder or a GGUF file)");
  if (fs::exists(dir / "manifest.json", error) || fs::exists(dir / "config.json", error)) return;
  if (fs::exists(dir / kSplitJournal, error))
    fail(path, "an interrupted split (" + std::string(kSplitJournal) +
                   " is here but no manifest.json): rerun layerwise split with the same --out to finish it");
  fail(path, "no config.json or manifest.json: not a model directory (a Hugging Face checkpoint has config.json, a "
             "layerwise split manifest.json)");
}

Checkpoint Checkpoint::open(const std::string& path) {
  check_path(path);
  Checkpoint checkpoint;
  checkpoint.path = path;
  const fs::path dir(path);
  if (fs::is_regular_file(dir)) {
    checkpoint.format = Format::Gguf;
    open_gguf(checkpoint, path);
  } else if (fs::exists(dir / "manifest.json")) {
    checkpoint.format = Format::Split;
    open_split(checkpoint, dir);
  } else {
    open_huggingface(checkpoint, dir);
  }
  for (const auto& warning : checkpoint.warnings) std::fprintf(stderr, "layerwise: warning: %s\n", warning.c_str());
  return checkpoint;
}

}  // namespace lw
