// manifest.json of a split directory: the model's config, the streaming units in order, and the
// size and checksum of each unit's file.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace lw {

struct ManifestUnit {
  std::string name;  // "embed", "layer.0", ..., "head"
  std::string file;  // a plain file name inside the split directory
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;
  // Each tensor's weight type in the unit file ("Q4_K", "F32", ...), in file order; empty for
  // manifests written before splits recorded them (they still open). parse_manifest refuses a
  // type name this build does not know; open_split checks the list against the file's header.
  std::vector<std::pair<std::string, std::string>> tensors = {};
};

struct Manifest {
  static constexpr int kVersion = 1;
  // "f32" | "f16" | "bf16" | "source" (kept as in the checkpoint) | a --quantize scheme
  // ("q8_0", "q4_k_m", ...)
  std::string dtype;
  nlohmann::json config;             // the source config.json, unchanged
  nlohmann::json generation_config;  // null when the source had none
  std::string source;                // where it was split from, for the record
  std::vector<ManifestUnit> units;
};

// Written beside the units while a split is under way; removed once manifest.json is written.
inline constexpr const char* kSplitJournal = "split-progress.json";

Manifest parse_manifest(std::string_view text, const std::string& path);
std::string manifest_to_json(const Manifest& manifest);
std::string format_xxh3(uint64_t hash);  // 16 hex digits

}  // namespace lw
