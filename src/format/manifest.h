// manifest.json of a split directory: the model's config, the streaming units in order, and the
// size and checksum of each unit's file.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace lw {

struct ManifestUnit {
  std::string name;  // "embed", "layer.0", ..., "head"
  std::string file;  // a plain file name inside the split directory
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;
};

struct Manifest {
  static constexpr int kVersion = 1;
  std::string dtype;  // "f32" | "f16" | "bf16" | "source" (kept as in the checkpoint)
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
