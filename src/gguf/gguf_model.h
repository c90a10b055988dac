// A GGUF file's model as Hugging Face would describe it: config.json and generation_config.json
// built from the `llama.*` metadata, and the llama.cpp name of every Hugging Face tensor name.
// With these the checkpoint loader treats a GGUF file like any other checkpoint (one config
// parser, one family recipe).
//
// llama.cpp stores the rows of attn_q / attn_k (weights and biases) permuted for its rotary
// layout (convert_hf_to_gguf.py's LlamaModel.permute): within each head, Hugging Face row
// j * head_dim/2 + i is stored at row 2 * i + j. gguf_rotary_heads() says which tensors are
// stored that way and for how many heads, so the loader can restore the Hugging Face order.
#pragma once
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"

namespace lw {

// config.json for the file's model. Throws lw::Error naming the file for an architecture other
// than llama, missing or inconsistent keys, and rope variants this engine does not run.
nlohmann::json gguf_model_config(const GgufFile& file);
// generation_config.json: bos_token_id, eos_token_id (the eos and, when different, the
// end-of-turn token).
nlohmann::json gguf_generation_config(const GgufFile& file);

// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"; nullopt for a name that
// has no llama.cpp counterpart.
std::optional<std::string> gguf_tensor_name(const std::string& hf_name);

// For attn_q (weight/bias): the config's attention heads; attn_k: its key/value heads; else 0.
int gguf_rotary_heads(const std::string& gguf_name, const nlohmann::json& config);

}  // namespace lw
