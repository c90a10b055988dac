// `info` and `split`: what a model is, how it would be planned, and its per-layer rewrite.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <map>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "cli/commands.h"
#include "common/error.h"
#include "common/sizes.h"
#include "common/system.h"
#include "gguf/gguf.h"
#include "runtime/engine.h"

namespace lw::cli {

void usage_fail(const std::string& problem) { throw UsageError(problem); }

uint64_t memory_option(const std::string& text) { return text.empty() ? 0 : parse_size(text); }

std::string compute_description(const Engine& engine) {
  const std::string kernels = std::string(", ") + engine.kernel_set() + " kernels, " + std::to_string(engine.threads()) + " threads";
  if (engine.compute_dtype() == DType::Q8_0)
    return "q8 matrix products on weight blocks (integer, activations as int8 per 32 values)" + kernels;
  if (engine.compute_dtype() != DType::BF16) return "f32 matrix products" + kernels;
  return *engine.matrix_units() ? "bf16 matrix products (AMX tiles when 16 tokens or more pass a layer)" + kernels
                                : "bf16 requested, but no AMX here: f32 matrix products" + kernels;
}

std::optional<DType> kv_dtype_option(const std::string& text) {
  if (text.empty()) return std::nullopt;
  const std::optional<DType> dtype = dtype_from_user(text);
  if (!dtype) usage_fail("--kv-dtype '" + text + "' is not one of f32, f16, bf16");
  return dtype;
}

std::string kv_description(const Engine& engine) {
  std::string text = std::string(kv_dtype_text(engine.kv_dtype())) + ", " + std::to_string(dtype_size(engine.kv_dtype())) + " bytes a value";
  if (!engine.kv_dtype_is_default()) return text + " (--kv-dtype)";
  switch (engine.kv_dtype()) {
    case DType::F32: return text + " (default: the weights are float32)";
    case DType::BF16: return text + " (default: bfloat16 weights; --kv-dtype f32 for float32)";
    default: return text + " (default: half-precision or quantized weights; --kv-dtype f32 for float32)";
  }
}

EngineOptions engine_options(const RunOptions& run) {
  int threads = run.threads;
  if (const int cores = usable_cores(); threads > cores) {
    std::fprintf(stderr, "layerwise: warning: --threads %d is more than the %d cores this process may use; using %d\n", threads,
                 cores, cores);
    threads = cores;
  }
  EngineOptions options{memory_option(run.max_memory), threads, !run.no_prefetch};
  if (run.compute_dtype == "q8") options.compute_dtype = DType::Q8_0;
  else if (!run.compute_dtype.empty()) options.compute_dtype = dtype_from_user(run.compute_dtype);
  options.kv_dtype = kv_dtype_option(run.kv_dtype);
  options.io_mode = parse_io_mode(run.io);
  return options;
}

std::vector<int> parse_ids(const std::string& text, const std::string& where) {
  std::vector<int> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long value = -1;
    try {
      value = std::stol(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || value < 0 || value > 1 << 30) fail(where, "'" + word + "' is not a token id");
    ids.push_back(static_cast<int>(value));
  }
  return ids;
}

std::string context_problem(const ModelConfig& config, int64_t positions, bool allow_long, const std::string& what) {
  const int64_t limit = context_limit(config);
  if (allow_long || positions <= limit) return "";
  std::string made_for = "max_position_embeddings " + std::to_string(config.max_position);
  if (limit != config.max_position) {
    char factor[32];
    std::snprintf(factor, sizeof factor, "%g", config.rope.factor);
    made_for += " x rope scaling factor " + std::string(factor);
  }
  return what + " need " + std::to_string(positions) + " positions, but the model is made for " + std::to_string(limit) + " (" +
         made_for + "); shorten the input, or pass --allow-long-context to run past that";
}

void check_context(const ModelConfig& config, int64_t positions, bool allow_long, const std::string& what) {
  if (const std::string problem = context_problem(config, positions, allow_long, what); !problem.empty()) fail(problem);
}

// "Q4_K x4, Q6_K x1, F32 x2": the weight types in memory and how many tensors hold each, the
// stored type beside it where loading converts (a vector stored in blocks).
static std::string weight_types(const std::vector<const TensorLocation*>& tensors) {
  std::map<std::string, int> counts;
  for (const TensorLocation* tensor : tensors) {
    std::string type = dtype_name(tensor->dtype);
    if (tensor->stored != tensor->dtype) type += std::string(" (stored ") + dtype_name(tensor->stored) + ")";
    counts[type]++;
  }
  std::string text;
  for (const auto& [type, count] : counts) text += (text.empty() ? "" : ", ") + type + " x" + std::to_string(count);
  return text;
}

int run_info(const InfoArgs& args) {
  const std::string& model = args.model;
  const int batch = args.batch;
  int context = args.context;
  EngineOptions options{memory_option(args.max_memory), 0, true};
  options.io_mode = parse_io_mode(args.io);
  options.kv_dtype = kv_dtype_option(args.kv_dtype);
  Engine engine(model, options);
  const auto& checkpoint = engine.checkpoint();
  const auto& c = engine.config();
  if (context <= 0) context = static_cast<int>(std::min<int64_t>(context_limit(c), 2048));
  check_context(c, context, args.allow_long_context, "--context " + std::to_string(context) + " tokens");
  // Plan first: a budget that cannot work is refused before anything is printed.
  const int prompt_tokens = static_cast<int>(std::min<int64_t>(int64_t{batch} * context, INT_MAX));
  const MemoryPlan plan = engine.plan({batch, context, prompt_tokens, false});
  std::string format = "Hugging Face";
  if (checkpoint.format == Checkpoint::Format::Split) format = "layerwise split, dtype " + checkpoint.split_dtype;
  if (checkpoint.format == Checkpoint::Format::Gguf) format = "GGUF";
  std::vector<const TensorLocation*> all_tensors;
  for (const auto& unit : checkpoint.units)
    for (const auto& tensor : unit.tensors) all_tensors.push_back(&tensor);
  std::printf("model         %s (%s)\n", model.c_str(), format.c_str());
  std::printf("weights       %s\n", weight_types(all_tensors).c_str());
  std::printf("architecture  %s: %d layers, hidden %d, heads %d (kv %d, head_dim %d), ffn %d, vocab %d\n",
              c.architecture.c_str(), c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
              c.intermediate_size, c.vocab_size);
  const char* rope_names[] = {"default", "linear", "dynamic", "llama3"};
  std::printf("rope          theta %g, scaling %s (factor %g); max positions %d; tied head %s\n", c.rope.theta,
              rope_names[static_cast<int>(c.rope.type)], c.rope.factor, c.max_position, c.tie_word_embeddings ? "yes" : "no");
  std::printf("parameters    %.3f M\n", static_cast<double>(checkpoint.parameter_count()) / 1e6);
  std::printf("compute       %s\n", compute_description(engine).c_str());
  std::printf("kv cache      %s\n", kv_description(engine).c_str());
  std::printf("units         (on disk -> in memory, in sweep order)\n");
  uint64_t total = 0, total_loaded = 0;
  for (const auto& unit : checkpoint.units) {
    std::vector<const TensorLocation*> tensors;
    for (const auto& tensor : unit.tensors) tensors.push_back(&tensor);
    std::printf("  %-10s %s -> %s  %s%s\n", unit.recipe.name.c_str(), format_size(unit.bytes()).c_str(),
                format_size(unit.loaded_bytes()).c_str(), weight_types(tensors).c_str(),
                unit.recipe.kind == UnitKind::Embed ? " (rows read on demand)" : "");
    total += unit.bytes();
    total_loaded += unit.loaded_bytes();
  }
  std::printf("  total      %s -> %s\n", format_size(total).c_str(), format_size(total_loaded).c_str());
  std::printf("plan          budget %s%s, %d sequence(s) of %d tokens\n", format_size(engine.budget_bytes()).c_str(),
              args.max_memory.empty() ? " (default: 80% of available memory)" : "", batch, context);
  std::vector<std::string> names;
  for (const auto& unit : checkpoint.units) names.push_back(unit.recipe.name);
  std::printf("%s", describe_plan(plan, names).c_str());
  if (!args.no_measure) std::printf("%s", describe_prediction(plan, engine.measure_speeds(plan)).c_str());
  return 0;
}

}  // namespace lw::cli
