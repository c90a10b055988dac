#include "gguf/gguf_model.h"

#include <algorithm>
#include <utility>

#include "common/error.h"

namespace lw {
namespace {

// Hugging Face suffix of a layer tensor -> llama.cpp's name within blk.N.
constexpr std::pair<const char*, const char*> kLayerTensors[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.gate_proj.bias", "ffn_gate.bias"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.up_proj.bias", "ffn_up.bias"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.down_proj.bias", "ffn_down.bias"},
};

int64_t positive(const GgufFile& file, const std::string& key) {
  const uint64_t value = file.get_uint(key);
  if (value == 0 || value > (uint64_t{1} << 31)) fail(file.path(), "metadata " + key + " = " + std::to_string(value) + " is out of range");
  return static_cast<int64_t>(value);
}

}  // namespace

nlohmann::json gguf_model_config(const GgufFile& file) {
  const std::string architecture = file.get_string("general.architecture");
  if (architecture != "llama")
    fail(file.path(), "architecture '" + architecture + "' is not supported (this build runs llama)");
  const std::string p = "llama.";
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_act", "silu"}};
  config["hidden_size"] = positive(file, p + "embedding_length");
  config["intermediate_size"] = positive(file, p + "feed_forward_length");
  config["num_hidden_layers"] = positive(file, p + "block_count");
  const int64_t heads = positive(file, p + "attention.head_count");
  config["num_attention_heads"] = heads;
  config["num_key_value_heads"] = file.has(p + "attention.head_count_kv") ? positive(file, p + "attention.head_count_kv") : heads;
  if (file.has(p + "context_length")) config["max_position_embeddings"] = positive(file, p + "context_length");

  int64_t head_dim = config["hidden_size"].get<int64_t>() / heads;
  if (file.has(p + "attention.key_length")) {
    head_dim = positive(file, p + "attention.key_length");
    if (file.has(p + "attention.value_length") && positive(file, p + "attention.value_length") != head_dim)
      fail(file.path(), "attention.key_length and attention.value_length differ, which llama does not do");
    config["head_dim"] = head_dim;
  }
  if (file.has(p + "rope.dimension_count") && positive(file, p + "rope.dimension_count") != head_dim)
    fail(file.path(), "rope.dimension_count " + std::to_string(file.get_uint(p + "rope.dimension_count")) +
                          " differs from the head size " + std::to_string(head_dim) + " (partial rotary is not supported)");

  // vocab_size: the metadata's, else the vocabulary's, else the embedding's rows.
  if (file.has(p + "vocab_size")) {
    config["vocab_size"] = positive(file, p + "vocab_size");
  } else if (file.has("tokenizer.ggml.tokens")) {
    config["vocab_size"] = file.get_array("tokenizer.ggml.tokens").count;
  } else if (const GgufTensorInfo* embed = file.find_tensor("token_embd.weight"); embed && embed->dims.size() == 2) {
    config["vocab_size"] = embed->dims[1];
  } else {
    fail(file.path(), "cannot tell the vocabulary size (no llama.vocab_size, tokenizer.ggml.tokens or token_embd.weight)");
  }

  config["rms_norm_eps"] = file.find_float(p + "attention.layer_norm_rms_epsilon").value_or(1e-5);
  config["rope_theta"] = file.find_float(p + "rope.freq_base").value_or(10000.0);
  const std::string scaling = file.find_string(p + "rope.scaling.type").value_or("none");
  if (file.find_tensor("rope_freqs.weight"))
    fail(file.path(), "has rope_freqs.weight (per-frequency rope factors, as Llama 3.1 GGUF files store them), which is not supported yet");
  if (scaling == "linear") {
    config["rope_scaling"] = {{"rope_type", "linear"}, {"factor", file.get_float(p + "rope.scaling.factor")}};
  } else if (scaling != "none") {
    fail(file.path(), "rope scaling '" + scaling + "' is not supported (supported: none, linear)");
  }

  config["tie_word_embeddings"] = file.find_tensor("output.weight") == nullptr;
  config["attention_bias"] = file.find_tensor("blk.0.attn_q.bias") != nullptr;
  config["mlp_bias"] = file.find_tensor("blk.0.ffn_up.bias") != nullptr;
  const nlohmann::json generation = gguf_generation_config(file);
  for (const char* key : {"bos_token_id", "eos_token_id"})
    if (generation.contains(key)) config[key] = generation[key];
  return config;
}

nlohmann::json gguf_generation_config(const GgufFile& file) {
  nlohmann::json generation = nlohmann::json::object();
  if (auto bos = file.find_uint("tokenizer.ggml.bos_token_id")) generation["bos_token_id"] = *bos;
  nlohmann::json eos = nlohmann::json::array();
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"})
    if (auto id = file.find_uint(key); id && !std::count(eos.begin(), eos.end(), nlohmann::json(*id))) eos.push_back(*id);
  if (eos.size() == 1) generation["eos_token_id"] = eos[0];
  if (eos.size() > 1) generation["eos_token_id"] = eos;
  return generation;
}

std::optional<std::string> gguf_tensor_name(const std::string& hf_name) {
  if (hf_name == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf_name == "model.norm.weight") return "output_norm.weight";
  if (hf_name == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  if (hf_name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const size_t dot = hf_name.find('.', prefix.size());
  const std::string layer = hf_name.substr(prefix.size(), dot - prefix.size());
  if (dot == std::string::npos || layer.empty() || layer.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  for (const auto& [hf, gguf] : kLayerTensors)
    if (hf_name.compare(dot + 1, std::string::npos, hf) == 0) return "blk." + layer + "." + gguf;
  return std::nullopt;
}

int gguf_rotary_heads(const std::string& gguf_name, const nlohmann::json& config) {
  auto ends_with = [&](const char* suffix) {
    const std::string s(suffix);
    return gguf_name.size() >= s.size() && gguf_name.compare(gguf_name.size() - s.size(), s.size(), s) == 0;
  };
  if (ends_with(".attn_q.weight") || ends_with(".attn_q.bias")) return config.at("num_attention_heads").get<int>();
  if (ends_with(".attn_k.weight") || ends_with(".attn_k.bias")) return config.at("num_key_value_heads").get<int>();
  return 0;
}

}  // namespace lw
