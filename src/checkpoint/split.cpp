#include "checkpoint/split.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "common/error.h"
#include "common/file.h"
#include "common/progress.h"
#include "format/manifest.h"
#include "format/quantize.h"
#include "format/safetensors.h"
#include "gguf/gguf.h"
#include "gguf/gguf_tokenizer.h"

namespace lw {
namespace fs = std::filesystem;
namespace {

constexpr uint64_t kChunkBytes = 16ull << 20;

std::string unit_file_name(const UnitRecipe& unit) {
  if (unit.kind == UnitKind::Layer) {
    char name[32];
    std::snprintf(name, sizeof name, "layer-%03d.safetensors", unit.layer);
    return name;
  }
  return unit.name + ".safetensors";
}

void write_file_atomically(const fs::path& path, const std::string& text) {
  const std::string temp = path.string() + ".tmp";
  int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(temp, std::string("cannot create: ") + std::strerror(errno));
  bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && fsync(fd) == 0;
  close(fd);
  if (!ok || rename(temp.c_str(), path.c_str()) != 0) {
    unlink(temp.c_str());
    fail(path.string(), "cannot write");
  }
}

// What identifies the split being made: source files (name, size, time) and the target dtype.
// A journal from a different source or dtype is not resumed.
nlohmann::json split_identity(const Checkpoint& source, const std::string& dtype) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& path : source.files) {
    struct stat info {};
    stat(path.c_str(), &info);
    files.push_back({fs::path(path).filename().string(), static_cast<uint64_t>(info.st_size),
                     static_cast<int64_t>(info.st_mtim.tv_sec)});
  }
  return {{"source", fs::absolute(source.path).lexically_normal().string()}, {"dtype", dtype}, {"files", files}};
}

uint64_t hash_file(const std::string& path, Progress& progress, uint64_t& done) {
  const File file(path);
  const uint64_t size = file.size();
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  std::vector<char> buffer(kChunkBytes);
  try {
    for (uint64_t at = 0; at < size; at += kChunkBytes) {
      const uint64_t take = std::min<uint64_t>(kChunkBytes, size - at);
      file.read_at(buffer.data(), take, at);
      XXH3_64bits_update(state, buffer.data(), take);
      progress.update(done += take);
    }
  } catch (...) {
    XXH3_freeState(state);
    throw;
  }
  uint64_t hash = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return hash;
}

// The type each of the unit's tensors is stored in.
std::vector<DType> unit_types(const Checkpoint& source, const UnitSource& unit, const SplitOptions& options) {
  std::vector<DType> types;
  for (size_t i = 0; i < unit.tensors.size(); i++) {
    const TensorLocation& tensor = unit.tensors[i];
    if (options.quantize.empty()) {
      types.push_back(options.dtype.value_or(tensor.dtype));
      continue;
    }
    if (dtype_is_quantized(tensor.stored))
      fail(source.path, std::string("tensor '") + tensor.name + "' is already quantized (" + dtype_name(tensor.stored) +
                            "); --quantize needs a float source (F32, F16 or BF16): quantizing blocks again would add "
                            "a second rounding error, so split the float checkpoint instead");
    types.push_back(split_tensor_type(options.quantize, unit.recipe.tensors[i].role, unit.recipe.layer,
                                      source.config.num_layers, source.config.tie_word_embeddings, tensor.shape,
                                      tensor.dtype));
  }
  return types;
}

// quantize_rows over the machine's cores (rows split evenly; the first error is rethrown).
void quantize_rows_parallel(DType to, const float* x, uint64_t rows, uint64_t n, char* out, uint64_t first_row) {
  const uint64_t row_bytes = dtype_row_bytes(to, n);
  const uint64_t threads = std::min<uint64_t>(std::max(1u, std::thread::hardware_concurrency()), rows);
  if (threads <= 1 || rows * n < (uint64_t{1} << 16)) {
    quantize_rows(to, x, rows, n, out, first_row);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(threads);
  for (uint64_t t = 0; t < threads; t++) {
    const uint64_t begin = rows * t / threads, end = rows * (t + 1) / threads;
    pool.emplace_back([&, t, begin, end] {
      try {
        quantize_rows(to, x + begin * n, end - begin, n, out + begin * row_bytes, first_row + begin);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  for (auto& thread : pool) thread.join();
  for (const auto& error : errors)
    if (error) std::rethrow_exception(error);
}

// Writes one unit's tensors in `types`, reading the source in chunks of rows (quantized chunks
// go through float32 first, so memory stays a few chunks whatever the tensor's size).
SafetensorsWriter::Result write_unit(const Checkpoint& source, const UnitSource& unit, const fs::path& path,
                                     const std::vector<DType>& types, Progress& progress, uint64_t& done) {
  std::vector<TensorSpec> specs;
  for (size_t i = 0; i < unit.tensors.size(); i++) specs.push_back({unit.recipe.tensors[i].name, types[i], unit.tensors[i].shape});
  SafetensorsWriter writer(path.string(), specs, {{"format", "pt"}, {"layerwise_unit", unit.recipe.name}});
  std::vector<char> loaded, out;
  std::vector<float> floats;
  for (size_t i = 0; i < unit.tensors.size(); i++) {
    const TensorLocation& tensor = unit.tensors[i];
    const File file(source.files[static_cast<size_t>(tensor.file)]);
    const DType to = specs[i].dtype;
    const bool quantize = dtype_is_quantized(to) && to != tensor.dtype;
    // Whole rows (whole heads for rotary tensors) at a time, about kChunkBytes each.
    const uint64_t granularity = tensor.row_granularity();
    const uint64_t chunk_rows = std::max<uint64_t>(1, kChunkBytes / tensor.loaded_row_bytes() / granularity) * granularity;
    for (uint64_t row = 0; row < tensor.rows(); row += chunk_rows) {
      const uint64_t rows = std::min(chunk_rows, tensor.rows() - row), stored = rows * tensor.stored_row_bytes();
      loaded.resize(rows * tensor.loaded_row_bytes());
      file.read_at(loaded.data() + loaded.size() - stored, stored, tensor.offset + row * tensor.stored_row_bytes());
      decode_rows(tensor, loaded.data(), rows);
      const uint64_t elements = rows * tensor.row_elements();
      out.resize(dtype_row_bytes(to, elements));
      if (quantize) {
        floats.resize(elements);
        convert(loaded.data(), tensor.dtype, floats.data(), DType::F32, elements);
        try {
          quantize_rows_parallel(to, floats.data(), rows, tensor.row_elements(), out.data(), row);
        } catch (const Error& problem) {
          fail(source.path, "tensor '" + tensor.name + "': " + problem.what());
        }
      } else {
        convert(loaded.data(), tensor.dtype, out.data(), to, elements);
      }
      writer.append(out.data(), out.size());
      progress.update(done += stored, unit.recipe.name);
    }
  }
  return writer.commit();
}

struct Scheme {
  const char* name;
  DType type;
};
constexpr Scheme kSchemes[] = {{"q8_0", DType::Q8_0}, {"q4_0", DType::Q4_0}, {"q4_k", DType::Q4_K},
                               {"q5_k", DType::Q5_K}, {"q6_k", DType::Q6_K}, {"iq4_xs", DType::IQ4_XS},
                               {"q4_k_m", DType::Q4_K}};

// llama.cpp's use_more_bits: the first and last eighth of the layers and every third between.
bool use_more_bits(int layer, int layers) {
  return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

}  // namespace

const std::string& quantize_schemes() {
  static const std::string names = [] {
    std::string text;
    for (const auto& scheme : kSchemes) text += (text.empty() ? "" : ", ") + std::string(scheme.name);
    return text;
  }();
  return names;
}

bool quantize_scheme_known(const std::string& scheme) {
  return std::any_of(std::begin(kSchemes), std::end(kSchemes), [&](const Scheme& s) { return scheme == s.name; });
}

DType split_tensor_type(const std::string& scheme, Role role, int layer, int layers, bool tied_embeddings,
                        const std::vector<int64_t>& shape, DType source) {
  if (shape.size() != 2) return source;
  const Scheme* found = nullptr;
  for (const auto& s : kSchemes)
    if (scheme == s.name) found = &s;
  if (!found) fail("--quantize " + scheme, "is not a quantization scheme (choose one of " + quantize_schemes() + ")");
  DType type = found->type;
  // As llama-quantize: the head (the embedding when tied to it) in Q6_K for every scheme but Q8_0.
  if ((role == Role::LmHead || (role == Role::Embed && tied_embeddings)) && type != DType::Q8_0) type = DType::Q6_K;
  else if (scheme == "q4_k_m" && (role == Role::Wv || role == Role::Wdown) && use_more_bits(layer, layers)) type = DType::Q6_K;
  const uint64_t row = static_cast<uint64_t>(shape.back());
  if (row % dtype_format(type).block_elements != 0) {
    switch (type) {
      case DType::Q4_K: type = DType::Q5_0; break;
      case DType::Q5_K: type = DType::Q5_1; break;
      case DType::Q6_K: type = DType::Q8_0; break;
      case DType::IQ4_XS: type = DType::IQ4_NL; break;
      default: break;
    }
  }
  if (row % dtype_format(type).block_elements != 0) return source;
  return type;
}

SplitResult split_checkpoint(const SplitOptions& options) {
  Checkpoint source = Checkpoint::open(options.model);
  const fs::path out(options.out);
  std::error_code error;
  if (fs::exists(out) && !fs::is_directory(out)) fail(options.out, "exists and is not a directory");
  fs::create_directories(out, error);
  if (error) fail(options.out, "cannot create directory: " + error.message());
  if (fs::equivalent(out, fs::path(options.model), error)) fail(options.out, "is the source directory");

  if (!options.quantize.empty() && options.dtype) fail("split", "--quantize and --dtype cannot be combined");
  if (!options.quantize.empty() && !quantize_scheme_known(options.quantize))
    fail("--quantize " + options.quantize, "is not a quantization scheme (choose one of " + quantize_schemes() + ")");
  // Every unit's types first: a quantized source is refused before anything is written.
  std::vector<std::vector<DType>> types;
  for (const auto& unit : source.units) types.push_back(unit_types(source, unit, options));
  // The label names the quantization too, so a journal of another scheme is not resumed.
  const std::string dtype_label = !options.quantize.empty() ? options.quantize
                                  : options.dtype            ? std::string(dtype_name(*options.dtype))
                                                             : "source";
  const nlohmann::json identity = split_identity(source, dtype_label);
  std::vector<std::string> names;
  for (const auto& unit : source.units) names.push_back(unit_file_name(unit.recipe));

  // Resume: a journal of the same split says which unit files are already complete.
  nlohmann::json journal = {{"identity", identity}, {"done", nlohmann::json::object()}};
  const fs::path journal_path = out / kSplitJournal;
  if (fs::exists(journal_path)) {
    nlohmann::json previous = nlohmann::json::parse(read_file_text(journal_path.string()), nullptr, false);
    if (!previous.is_discarded() && previous.is_object() && previous.value("identity", nlohmann::json()) == identity &&
        previous.contains("done") && previous["done"].is_object())
      journal["done"] = previous["done"];
  }
  for (const auto& entry : fs::directory_iterator(out)) {
    const std::string name = entry.path().filename().string();
    bool ours = name == kSplitJournal || name == "manifest.json" || name.ends_with(".tmp") ||
                std::find(names.begin(), names.end(), name) != names.end() || name.starts_with("tokenizer") ||
                name == "special_tokens_map.json";
    if (!ours) fail(options.out, "is not empty and holds '" + name + "', which a split did not write; choose an empty directory");
    if (name.ends_with(".tmp")) fs::remove(entry.path());  // leftovers of an interrupted write
  }
  fs::remove(out / "manifest.json", error);  // a new one is written last, when every unit is complete

  uint64_t total = 0;
  for (const auto& unit : source.units) total += unit.bytes();
  Progress progress("split", total, options.quiet);
  uint64_t done = 0;
  SplitResult result;
  Manifest manifest;
  manifest.dtype = dtype_label;
  for (char& c : manifest.dtype) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  manifest.config = source.raw_config;
  manifest.generation_config = source.raw_generation_config;
  manifest.source = identity["source"];
  for (size_t u = 0; u < source.units.size(); u++) {
    const UnitSource& unit = source.units[u];
    const fs::path path = out / names[u];
    ManifestUnit listed{unit.recipe.name, names[u], 0, 0, {}};
    for (size_t i = 0; i < unit.tensors.size(); i++) listed.tensors.emplace_back(unit.recipe.tensors[i].name, dtype_name(types[u][i]));
    const auto& previous = journal["done"];
    if (previous.contains(names[u]) && fs::exists(path) &&
        fs::file_size(path) == previous[names[u]].value("bytes", uint64_t{0})) {
      listed.bytes = previous[names[u]]["bytes"].get<uint64_t>();
      listed.xxh3 = previous[names[u]]["xxh3"].get<uint64_t>();
      result.units_reused++;
      progress.update(done += unit.bytes(), unit.recipe.name);
    } else {
      auto written = write_unit(source, unit, path, types[u], progress, done);
      listed.bytes = written.bytes;
      listed.xxh3 = written.xxh3;
      result.units_written++;
      result.bytes_written += written.bytes;
      journal["done"][names[u]] = {{"bytes", written.bytes}, {"xxh3", written.xxh3}};
      write_file_atomically(journal_path, journal.dump());
      // Fault injection for the resume test: die like a killed process after N unit files.
      if (const char* kill_after = std::getenv("LAYERWISE_TEST_SPLIT_KILL_AFTER");
          kill_after && result.units_written == std::atoi(kill_after))
        _exit(75);
    }
    manifest.units.push_back(listed);
  }
  progress.finish();
  // Tokenizer files travel with the model so a split directory is self-contained.
  if (source.format == Checkpoint::Format::Gguf) {
    try {
      const GgufFile gguf = GgufFile::open(options.model);
      const nlohmann::json tokenizer = gguf_tokenizer_json(gguf), tokenizer_config = gguf_tokenizer_config(gguf);
      write_file_atomically(out / "tokenizer.json", tokenizer.dump());
      write_file_atomically(out / "tokenizer_config.json", tokenizer_config.dump(2));
    } catch (const Error& problem) {
      std::fprintf(stderr, "layerwise: warning: no tokenizer written to the split: %s\n", problem.what());
    }
  } else {
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"}) {
      const fs::path from = fs::path(options.model) / name;
      if (fs::exists(from)) write_file_atomically(out / name, read_file_text(from.string()));
    }
  }
  write_file_atomically(out / "manifest.json", manifest_to_json(manifest));
  fs::remove(journal_path, error);
  return result;
}

int verify_split(const std::string& dir, bool quiet) {
  const fs::path manifest_path = fs::path(dir) / "manifest.json";
  if (!fs::exists(manifest_path)) fail(dir, "no manifest.json: not a complete split (run layerwise split to finish it)");
  Manifest manifest = parse_manifest(read_file_text(manifest_path.string()), manifest_path.string());
  uint64_t total = 0, done = 0;
  for (const auto& unit : manifest.units) total += unit.bytes;
  Progress progress("verify", total, quiet);
  for (const auto& unit : manifest.units) {
    const std::string path = (fs::path(dir) / unit.file).string();
    std::error_code error;
    uint64_t size = fs::file_size(path, error);
    if (error) fail(path, "missing");
    if (size != unit.bytes)
      fail(path, "is " + std::to_string(size) + " bytes but the manifest says " + std::to_string(unit.bytes));
    uint64_t hash = hash_file(path, progress, done);
    if (hash != unit.xxh3)
      fail(path, "checksum " + format_xxh3(hash) + " does not match the manifest's " + format_xxh3(unit.xxh3) + " (corrupted)");
  }
  progress.finish();
  Checkpoint::open(dir);  // headers, shapes and dtypes, as the engine will read them
  return static_cast<int>(manifest.units.size());
}

}  // namespace lw
