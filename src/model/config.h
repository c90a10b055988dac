// The model's shape and hyper-parameters, read from a Hugging Face config.json (both the
// classic `rope_theta`/`rope_scaling` keys and transformers 5's `rope_parameters`).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "format/dtype.h"

namespace lw {

enum class RopeType { Default, Linear, Dynamic, Llama3 };

struct RopeConfig {
  RopeType type = RopeType::Default;
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  int original_max_position = 0;                         // llama3 (and dynamic: max_position)
};

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int max_position = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  std::optional<DType> torch_dtype;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;  // generation_config.json's when present, else config.json's

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
};

// Throws lw::Error naming `path` for anything missing, malformed or unsupported, and
// `generation_path` (default: `path`) for what generation_config holds.
ModelConfig parse_model_config(const nlohmann::json& config, const nlohmann::json& generation_config,
                               const std::string& path, const std::string& generation_path = "");
nlohmann::json read_json_file(const std::string& path);

// Positions the model is made for: max_position_embeddings, stretched by the rope scaling
// factor for `linear` and `dynamic` scaling (which exist to run past the trained length);
// `llama3` configurations state the stretched length as max_position_embeddings already.
int64_t context_limit(const ModelConfig& config);

// RoPE inverse frequencies (head_dim / 2 of them) as transformers computes them, in float32.
// `seq_len` matters only for `dynamic` scaling: the largest position of the forward pass + 1.
std::vector<float> rope_inverse_frequencies(const ModelConfig& config, int seq_len);

}  // namespace lw
