#include "format/manifest.h"

#include <cstdio>

#include "common/error.h"
#include "format/dtype.h"

namespace lw {

std::string format_xxh3(uint64_t hash) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

static uint64_t parse_xxh3(const std::string& text, const std::string& path) {
  if (text.size() != 16 || text.find_first_not_of("0123456789abcdef") != std::string::npos)
    fail(path, "checksum '" + text + "' is not 16 lowercase hex digits");
  return std::stoull(text, nullptr, 16);
}

Manifest parse_manifest(std::string_view text, const std::string& path) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("manifest is not valid JSON (") + e.what() + ")");
  }
  if (!json.is_object()) fail(path, "manifest is not a JSON object");
  if (!json.contains("format") || json["format"] != "layerwise-split")
    fail(path, "not a layerwise split manifest (\"format\" is not \"layerwise-split\")");
  if (!json.contains("version") || !json["version"].is_number_integer() || json["version"] != Manifest::kVersion)
    fail(path, "unsupported manifest version (this build reads version " + std::to_string(Manifest::kVersion) + ")");
  Manifest manifest;
  if (!json.contains("dtype") || !json["dtype"].is_string()) fail(path, "manifest has no \"dtype\" string");
  manifest.dtype = json["dtype"].get<std::string>();
  if (!json.contains("config") || !json["config"].is_object()) fail(path, "manifest has no \"config\" object");
  manifest.config = json["config"];
  if (json.contains("generation_config") && !json["generation_config"].is_null()) {
    if (!json["generation_config"].is_object()) fail(path, "\"generation_config\" is not an object");
    manifest.generation_config = json["generation_config"];
  }
  if (json.contains("source") && json["source"].is_string()) manifest.source = json["source"].get<std::string>();
  if (!json.contains("units") || !json["units"].is_array() || json["units"].empty())
    fail(path, "manifest has no \"units\" list");
  for (const auto& entry : json["units"]) {
    if (!entry.is_object()) fail(path, "a unit entry is not an object");
    ManifestUnit unit;
    auto text_field = [&](const char* key) {
      if (!entry.contains(key) || !entry[key].is_string()) fail(path, std::string("a unit has no \"") + key + "\" string");
      return entry[key].get<std::string>();
    };
    unit.name = text_field("name");
    unit.file = text_field("file");
    if (unit.file.empty() || unit.file.find('/') != std::string::npos || unit.file[0] == '.')
      fail(path, "unit '" + unit.name + "' names file '" + unit.file + "', which is not a plain file name");
    if (!entry.contains("bytes") || !entry["bytes"].is_number_unsigned()) fail(path, "unit '" + unit.name + "' has no byte size");
    unit.bytes = entry["bytes"].get<uint64_t>();
    unit.xxh3 = parse_xxh3(text_field("xxh3"), path);
    if (entry.contains("tensors")) {
      if (!entry["tensors"].is_object()) fail(path, "unit '" + unit.name + "' has a \"tensors\" entry that is not an object");
      for (const auto& [tensor, type] : entry["tensors"].items()) {
        if (!type.is_string() || !dtype_from_name(type.get<std::string>()))
          fail(path, "unit file '" + unit.file + "', tensor '" + tensor + "': unknown weight type " + type.dump() +
                         " (known: " + dtype_names() + ")");
        unit.tensors.emplace_back(tensor, type.get<std::string>());
      }
    }
    manifest.units.push_back(std::move(unit));
  }
  return manifest;
}

std::string manifest_to_json(const Manifest& manifest) {
  nlohmann::ordered_json json;
  json["format"] = "layerwise-split";
  json["version"] = Manifest::kVersion;
  json["dtype"] = manifest.dtype;
  json["source"] = manifest.source;
  json["config"] = manifest.config;
  json["generation_config"] = manifest.generation_config;
  json["units"] = nlohmann::ordered_json::array();
  for (const auto& unit : manifest.units) {
    nlohmann::ordered_json entry = {{"name", unit.name}, {"file", unit.file}, {"bytes", unit.bytes}, {"xxh3", format_xxh3(unit.xxh3)}};
    if (!unit.tensors.empty()) {
      entry["tensors"] = nlohmann::ordered_json::object();
      for (const auto& [tensor, type] : unit.tensors) entry["tensors"][tensor] = type;
    }
    json["units"].push_back(std::move(entry));
  }
  return json.dump(2) + "\n";
}

}  // namespace lw
