// Writes a random-weight Llama checkpoint in Hugging Face layout (config.json,
// generation_config.json, model.safetensors) of a named or given shape, for benchmarks and
// memory tests. Weights are uniform in [-a, a] with a = 1/sqrt(fan_in), norms are 1.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/error.h"
#include "common/progress.h"
#include "common/sizes.h"
#include "format/safetensors.h"
#include "model/config.h"
#include "model/llama.h"

namespace {

struct Shape {
  int hidden, layers, heads, kv_heads, ffn, vocab;
};

const std::map<std::string, Shape> kShapes = {
    {"tiny", {64, 4, 4, 2, 160, 512}},
    {"small", {512, 16, 8, 4, 1408, 8000}},
    {"tinyllama-1.1b", {2048, 22, 32, 4, 5632, 32000}},
    {"llama2-7b", {4096, 32, 32, 32, 11008, 32000}},
};

uint64_t next_random(uint64_t& state) {  // xorshift64*
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  return state * 2685821657736338717ull;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"make_checkpoint: write a random-weight Llama checkpoint (Hugging Face layout)"};
  std::string out, shape_name = "tiny", dtype_text = "f32";
  Shape shape{};
  int layers_override = 0;
  uint64_t seed = 1;
  bool quiet = false;
  app.add_option("--out", out, "Destination directory")->required();
  app.add_option("--shape", shape_name, "tiny, small, tinyllama-1.1b or llama2-7b")->capture_default_str();
  app.add_option("--layers", layers_override, "Override the number of layers");
  app.add_option("--dtype", dtype_text, "f32, f16 or bf16")->capture_default_str();
  app.add_option("--seed", seed, "Random seed")->capture_default_str();
  app.add_flag("--quiet", quiet, "No progress");
  CLI11_PARSE(app, argc, argv);
  try {
    auto found = kShapes.find(shape_name);
    if (found == kShapes.end()) lw::fail("unknown --shape '" + shape_name + "'");
    shape = found->second;
    if (layers_override > 0) shape.layers = layers_override;
    auto dtype = lw::dtype_from_user(dtype_text);
    if (!dtype) lw::fail("unknown --dtype '" + dtype_text + "'");
    std::filesystem::create_directories(out);
    const char* torch_names[] = {"float32", "float16", "bfloat16"};
    nlohmann::ordered_json config = {{"architectures", {"LlamaForCausalLM"}},
                                     {"model_type", "llama"},
                                     {"hidden_size", shape.hidden},
                                     {"intermediate_size", shape.ffn},
                                     {"num_hidden_layers", shape.layers},
                                     {"num_attention_heads", shape.heads},
                                     {"num_key_value_heads", shape.kv_heads},
                                     {"vocab_size", shape.vocab},
                                     {"max_position_embeddings", 4096},
                                     {"rms_norm_eps", 1e-5},
                                     {"rope_theta", 10000.0},
                                     {"hidden_act", "silu"},
                                     {"tie_word_embeddings", false},
                                     {"bos_token_id", 1},
                                     {"eos_token_id", 2},
                                     {"torch_dtype", torch_names[static_cast<int>(*dtype)]}};
    std::ofstream(out + "/config.json") << config.dump(2) << "\n";
    std::ofstream(out + "/generation_config.json") << "{\"bos_token_id\": 1, \"eos_token_id\": 2}\n";

    lw::ModelConfig model = lw::parse_model_config(nlohmann::json::parse(config.dump()), nullptr, out + "/config.json");
    std::vector<lw::TensorSpec> specs;
    for (const auto& unit : lw::llama_units(model))
      for (const auto& tensor : unit.tensors) specs.push_back({tensor.name, *dtype, tensor.shape});
    uint64_t total = 0;
    for (const auto& spec : specs) total += spec.bytes();
    lw::SafetensorsWriter writer(out + "/model.safetensors", specs, {{"format", "pt"}});
    lw::Progress progress("write", total, quiet);
    uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1, done = 0;
    std::vector<float> values(1 << 20);
    std::vector<char> converted(values.size() * 4);
    for (const auto& spec : specs) {
      const bool is_norm = spec.shape.size() == 1;
      const float scale = is_norm ? 0.0f : 1.0f / std::sqrt(static_cast<float>(spec.shape[1]));
      uint64_t remaining = spec.bytes() / lw::dtype_size(spec.dtype);
      while (remaining > 0) {
        size_t count = std::min<uint64_t>(remaining, values.size());
        for (size_t i = 0; i < count; i++) {
          double uniform = static_cast<double>(next_random(state) >> 11) * 0x1.0p-53 * 2 - 1;
          values[i] = is_norm ? 1.0f : static_cast<float>(uniform) * scale;
        }
        lw::convert(values.data(), lw::DType::F32, converted.data(), *dtype, count);
        writer.append(converted.data(), count * lw::dtype_size(*dtype));
        remaining -= count;
        progress.update(done += count * lw::dtype_size(*dtype));
      }
    }
    auto result = writer.commit();
    progress.finish();
    if (!quiet) std::fprintf(stderr, "wrote %s (%s)\n", out.c_str(), lw::format_size(result.bytes).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_checkpoint: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
