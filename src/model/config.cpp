#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/file.h"

namespace lw {

nlohmann::json read_json_file(const std::string& path) {
  const std::string text = read_file_text(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("not valid JSON (") + e.what() + ")");
  }
}

namespace {

int positive_int(const nlohmann::json& config, const char* key, const std::string& path, std::optional<int> fallback = {}) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) {
    if (fallback) return *fallback;
    fail(path, std::string("missing \"") + key + "\"");
  }
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > (1 << 30))
    fail(path, std::string("\"") + key + "\" must be a positive integer");
  return it->get<int>();
}

double positive_number(const nlohmann::json& json, const char* key, const std::string& path, double fallback) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) return fallback;
  if (!it->is_number() || !(it->get<double>() > 0) || !std::isfinite(it->get<double>()))
    fail(path, std::string("\"") + key + "\" must be a positive finite number");
  return it->get<double>();
}

bool boolean(const nlohmann::json& config, const char* key, const std::string& path, bool fallback) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(path, std::string("\"") + key + "\" must be true or false");
  return it->get<bool>();
}

std::vector<int> token_ids(const nlohmann::json& value, const char* key, const std::string& path) {
  std::vector<int> ids;
  if (value.is_null()) return ids;
  if (value.is_number_integer()) return {value.get<int>()};
  if (!value.is_array()) fail(path, std::string("\"") + key + "\" must be a token id or a list of them");
  for (const auto& id : value) {
    if (!id.is_number_integer()) fail(path, std::string("\"") + key + "\" must be a token id or a list of them");
    ids.push_back(id.get<int>());
  }
  return ids;
}

RopeConfig parse_rope(const nlohmann::json& config, const std::string& path, int max_position) {
  RopeConfig rope;
  // transformers 5 keeps everything under rope_parameters; earlier versions use rope_theta + rope_scaling.
  const nlohmann::json* scaling = nullptr;
  if (auto it = config.find("rope_parameters"); it != config.end() && !it->is_null()) {
    if (!it->is_object()) fail(path, "\"rope_parameters\" must be an object");
    scaling = &*it;
    rope.theta = positive_number(*it, "rope_theta", path, positive_number(config, "rope_theta", path, 10000.0));
  } else {
    rope.theta = positive_number(config, "rope_theta", path, 10000.0);
    if (auto scaling_it = config.find("rope_scaling"); scaling_it != config.end() && !scaling_it->is_null()) {
      if (!scaling_it->is_object()) fail(path, "\"rope_scaling\" must be an object or null");
      scaling = &*scaling_it;
    }
  }
  if (!scaling) return rope;
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto it = scaling->find(key);
    if (it != scaling->end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type.empty() || type == "default") return rope;
  rope.factor = positive_number(*scaling, "factor", path, 0);
  if (rope.factor <= 0) fail(path, "rope scaling '" + type + "' needs a positive \"factor\"");
  if (type == "linear") {
    rope.type = RopeType::Linear;
  } else if (type == "dynamic") {
    rope.type = RopeType::Dynamic;
    rope.original_max_position = max_position;
  } else if (type == "llama3") {
    rope.type = RopeType::Llama3;
    rope.low_freq_factor = positive_number(*scaling, "low_freq_factor", path, 0);
    rope.high_freq_factor = positive_number(*scaling, "high_freq_factor", path, 0);
    auto original = scaling->find("original_max_position_embeddings");
    if (rope.low_freq_factor <= 0 || rope.high_freq_factor <= rope.low_freq_factor || original == scaling->end() ||
        !original->is_number_integer() || original->get<int>() <= 0)
      fail(path, "rope scaling 'llama3' needs low_freq_factor < high_freq_factor and original_max_position_embeddings");
    rope.original_max_position = original->get<int>();
  } else {
    fail(path, "rope scaling type '" + type + "' is not supported (supported: linear, dynamic, llama3)");
  }
  return rope;
}

}  // namespace

ModelConfig parse_model_config(const nlohmann::json& config, const nlohmann::json& generation_config,
                               const std::string& path, const std::string& generation_path) {
  const std::string& eos_source = generation_config.is_object() && generation_config.contains("eos_token_id")
                                      ? (generation_path.empty() ? path : generation_path)
                                      : path;
  if (!config.is_object()) fail(path, "config is not a JSON object");
  ModelConfig model;
  auto architectures = config.find("architectures");
  if (architectures != config.end() && architectures->is_array() && !architectures->empty() && (*architectures)[0].is_string())
    model.architecture = (*architectures)[0].get<std::string>();
  std::string model_type = config.value("model_type", "");
  if (model.architecture != "LlamaForCausalLM" && !(model.architecture.empty() && model_type == "llama"))
    fail(path, "unsupported architecture '" + (model.architecture.empty() ? model_type : model.architecture) +
                   "' (this build runs LlamaForCausalLM)");
  model.architecture = "LlamaForCausalLM";
  std::string activation = config.value("hidden_act", "silu");
  if (activation != "silu") fail(path, "hidden_act '" + activation + "' is not supported (Llama uses silu)");
  model.vocab_size = positive_int(config, "vocab_size", path);
  model.hidden_size = positive_int(config, "hidden_size", path);
  model.intermediate_size = positive_int(config, "intermediate_size", path);
  model.num_layers = positive_int(config, "num_hidden_layers", path);
  model.num_heads = positive_int(config, "num_attention_heads", path);
  model.num_kv_heads = positive_int(config, "num_key_value_heads", path, model.num_heads);
  if (model.num_heads % model.num_kv_heads != 0)
    fail(path, "num_attention_heads (" + std::to_string(model.num_heads) + ") is not a multiple of num_key_value_heads (" +
                   std::to_string(model.num_kv_heads) + ")");
  if (!config.contains("head_dim") && model.hidden_size % model.num_heads != 0)
    fail(path, "hidden_size is not a multiple of num_attention_heads and no head_dim is given");
  model.head_dim = positive_int(config, "head_dim", path, model.hidden_size / model.num_heads);
  if (model.head_dim % 2 != 0) fail(path, "head_dim must be even for rotary embeddings");
  model.max_position = positive_int(config, "max_position_embeddings", path, 2048);
  model.rms_norm_eps = positive_number(config, "rms_norm_eps", path, 1e-6);
  model.rope = parse_rope(config, path, model.max_position);
  model.tie_word_embeddings = boolean(config, "tie_word_embeddings", path, false);
  model.attention_bias = boolean(config, "attention_bias", path, false);
  model.mlp_bias = boolean(config, "mlp_bias", path, false);
  for (const char* key : {"torch_dtype", "dtype"}) {
    auto it = config.find(key);
    if (it != config.end() && it->is_string()) {
      model.torch_dtype = dtype_from_user(it->get<std::string>());
      break;
    }
  }
  if (auto it = config.find("bos_token_id"); it != config.end() && it->is_number_integer()) model.bos_token_id = it->get<int>();
  model.eos_token_ids = token_ids(config.value("eos_token_id", nlohmann::json()), "eos_token_id", path);
  if (generation_config.is_object() && generation_config.contains("eos_token_id"))
    model.eos_token_ids = token_ids(generation_config["eos_token_id"], "eos_token_id", eos_source);
  for (int id : model.eos_token_ids)
    if (id < 0 || id >= model.vocab_size)
      fail(eos_source, "eos_token_id " + std::to_string(id) + " is outside the vocabulary (0.." + std::to_string(model.vocab_size - 1) + ")");
  return model;
}

int64_t context_limit(const ModelConfig& config) {
  const bool stretched = config.rope.type == RopeType::Linear || config.rope.type == RopeType::Dynamic;
  const double limit = static_cast<double>(config.max_position) * (stretched ? std::max(1.0, config.rope.factor) : 1.0);
  return static_cast<int64_t>(std::min(limit, static_cast<double>(1 << 30)));
}

std::vector<float> rope_inverse_frequencies(const ModelConfig& config, int seq_len) {
  const int dim = config.head_dim;
  const RopeConfig& rope = config.rope;
  float base = static_cast<float>(rope.theta);
  if (rope.type == RopeType::Dynamic && seq_len > rope.original_max_position) {
    // NTK-aware scaling: grow the base with the context beyond the trained length (float32, as
    // transformers computes it from a tensor).
    float ratio = static_cast<float>(rope.factor) * static_cast<float>(seq_len) / static_cast<float>(rope.original_max_position) -
                  static_cast<float>(rope.factor - 1);
    base = base * std::pow(ratio, static_cast<float>(static_cast<double>(dim) / (dim - 2)));
  }
  std::vector<float> inverse(static_cast<size_t>(dim / 2));
  for (int i = 0; i < dim / 2; i++) {
    // float32 as torch does: base ** (arange(0, dim, 2).float() / dim)
    float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inverse[i] = 1.0f / std::pow(base, exponent);
  }
  if (rope.type == RopeType::Linear) {
    for (float& f : inverse) f /= static_cast<float>(rope.factor);
  } else if (rope.type == RopeType::Llama3) {
    const double old_context = rope.original_max_position;
    const double low_freq_wavelength = old_context / rope.low_freq_factor;
    const double high_freq_wavelength = old_context / rope.high_freq_factor;
    for (float& f : inverse) {
      double wavelength = 2 * M_PI / f;
      if (wavelength > low_freq_wavelength) {
        f = static_cast<float>(f / rope.factor);
      } else if (wavelength >= high_freq_wavelength) {
        double smooth = (old_context / wavelength - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
        f = static_cast<float>((1 - smooth) * f / rope.factor + smooth * f);
      }
    }
  }
  return inverse;
}

}  // namespace lw
