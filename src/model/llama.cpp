#include "model/llama.h"

namespace lw {

std::vector<UnitRecipe> llama_units(const ModelConfig& c) {
  const int64_t hidden = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), ffn = c.intermediate_size;
  std::vector<UnitRecipe> units;
  units.push_back({UnitKind::Embed, -1, "embed", {{Role::Embed, "model.embed_tokens.weight", {c.vocab_size, hidden}}}});
  for (int layer = 0; layer < c.num_layers; layer++) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    UnitRecipe unit{UnitKind::Layer, layer, "layer." + std::to_string(layer), {}};
    auto add = [&](Role role, const std::string& name, std::vector<int64_t> shape) {
      unit.tensors.push_back({role, p + name, std::move(shape)});
    };
    add(Role::AttnNorm, "input_layernorm.weight", {hidden});
    add(Role::Wq, "self_attn.q_proj.weight", {q, hidden});
    add(Role::Wk, "self_attn.k_proj.weight", {kv, hidden});
    add(Role::Wv, "self_attn.v_proj.weight", {kv, hidden});
    add(Role::Wo, "self_attn.o_proj.weight", {hidden, q});
    if (c.attention_bias) {
      add(Role::Bq, "self_attn.q_proj.bias", {q});
      add(Role::Bk, "self_attn.k_proj.bias", {kv});
      add(Role::Bv, "self_attn.v_proj.bias", {kv});
      add(Role::Bo, "self_attn.o_proj.bias", {hidden});
    }
    add(Role::MlpNorm, "post_attention_layernorm.weight", {hidden});
    add(Role::Wgate, "mlp.gate_proj.weight", {ffn, hidden});
    add(Role::Wup, "mlp.up_proj.weight", {ffn, hidden});
    add(Role::Wdown, "mlp.down_proj.weight", {hidden, ffn});
    if (c.mlp_bias) {
      add(Role::Bgate, "mlp.gate_proj.bias", {ffn});
      add(Role::Bup, "mlp.up_proj.bias", {ffn});
      add(Role::Bdown, "mlp.down_proj.bias", {hidden});
    }
    units.push_back(std::move(unit));
  }
  units.push_back({UnitKind::Head, -1, "head",
                   {{Role::FinalNorm, "model.norm.weight", {hidden}}, {Role::LmHead, "lm_head.weight", {c.vocab_size, hidden}}}});
  return units;
}

}  // namespace lw
