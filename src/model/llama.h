// The Llama family as data: which tensors each streaming unit holds, with their names in a
// Hugging Face checkpoint and the shapes the config implies. The forward pass asks for roles.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace lw {

enum class Role {
  Embed,
  AttnNorm, Wq, Bq, Wk, Bk, Wv, Bv, Wo, Bo,
  MlpNorm, Wgate, Bgate, Wup, Bup, Wdown, Bdown,
  FinalNorm, LmHead,
  Count
};

enum class UnitKind { Embed, Layer, Head };

struct TensorRecipe {
  Role role;
  std::string name;  // Hugging Face name
  std::vector<int64_t> shape;
};

struct UnitRecipe {
  UnitKind kind;
  int layer = -1;    // for layers
  std::string name;  // "embed", "layer.3", "head"
  std::vector<TensorRecipe> tensors;
};

// embed, layer.0 .. layer.N-1, head: the order of one sweep.
std::vector<UnitRecipe> llama_units(const ModelConfig& config);

}  // namespace lw
