#include "checkpoint/split.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "common/error.h"
#include "common/file.h"
#include "common/progress.h"
#include "format/manifest.h"
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

// Writes one unit's tensors (converted to `dtype` if set), reading the source in chunks.
SafetensorsWriter::Result write_unit(const Checkpoint& source, const UnitSource& unit, const fs::path& path,
                                     std::optional<DType> dtype, Progress& progress, uint64_t& done) {
  std::vector<TensorSpec> specs;
  for (size_t i = 0; i < unit.tensors.size(); i++)
    specs.push_back({unit.recipe.tensors[i].name, dtype.value_or(unit.tensors[i].dtype), unit.tensors[i].shape});
  SafetensorsWriter writer(path.string(), specs, {{"format", "pt"}, {"layerwise_unit", unit.recipe.name}});
  std::vector<char> loaded, out;
  for (size_t i = 0; i < unit.tensors.size(); i++) {
    const TensorLocation& tensor = unit.tensors[i];
    const File file(source.files[static_cast<size_t>(tensor.file)]);
    const DType to = specs[i].dtype;
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
      convert(loaded.data(), tensor.dtype, out.data(), to, elements);
      writer.append(out.data(), out.size());
      progress.update(done += stored, unit.recipe.name);
    }
  }
  return writer.commit();
}

}  // namespace

SplitResult split_checkpoint(const SplitOptions& options) {
  Checkpoint source = Checkpoint::open(options.model);
  const fs::path out(options.out);
  std::error_code error;
  if (fs::exists(out) && !fs::is_directory(out)) fail(options.out, "exists and is not a directory");
  fs::create_directories(out, error);
  if (error) fail(options.out, "cannot create directory: " + error.message());
  if (fs::equivalent(out, fs::path(options.model), error)) fail(options.out, "is the source directory");

  const std::string dtype_label = options.dtype ? std::string(dtype_name(*options.dtype)) : "source";
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
  manifest.dtype = options.dtype ? std::string(dtype_name(*options.dtype)) : "source";
  for (char& c : manifest.dtype) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  manifest.config = source.raw_config;
  manifest.generation_config = source.raw_generation_config;
  manifest.source = identity["source"];
  for (size_t u = 0; u < source.units.size(); u++) {
    const UnitSource& unit = source.units[u];
    const fs::path path = out / names[u];
    ManifestUnit listed{unit.recipe.name, names[u], 0, 0};
    const auto& previous = journal["done"];
    if (previous.contains(names[u]) && fs::exists(path) &&
        fs::file_size(path) == previous[names[u]].value("bytes", uint64_t{0})) {
      listed.bytes = previous[names[u]]["bytes"].get<uint64_t>();
      listed.xxh3 = previous[names[u]]["xxh3"].get<uint64_t>();
      result.units_reused++;
      progress.update(done += unit.bytes(), unit.recipe.name);
    } else {
      auto written = write_unit(source, unit, path, options.dtype, progress, done);
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
