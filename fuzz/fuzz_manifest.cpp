// libFuzzer target for lw::parse_manifest (manifest.json of a split directory, which may come
// from anywhere a split model is downloaded from). lw::Error is the expected outcome for bad
// input; any other exception or a sanitizer report is a finding. An accepted manifest must say
// format "layerwise-split" and version exactly 1, and survive a round trip through
// manifest_to_json unchanged.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "format/manifest.h"

namespace {

[[noreturn]] void invariant_broken(const char* what) {
  std::fprintf(stderr, "fuzz_manifest: invariant broken: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  lw::Manifest manifest;
  try {
    manifest = lw::parse_manifest(text, "fuzz");
  } catch (const lw::Error&) {
    return 0;  // rejected with a message: the expected outcome for bad input
  }
  // What was accepted must really say what parse_manifest checks for.
  const nlohmann::json json = nlohmann::json::parse(text.begin(), text.end());
  if (json.at("format") != "layerwise-split") invariant_broken("accepted a manifest whose format is not layerwise-split");
  if (!json.at("version").is_number_integer() || json.at("version") != lw::Manifest::kVersion)
    invariant_broken("accepted a manifest whose version is not exactly 1");
  if (manifest.units.empty()) invariant_broken("accepted a manifest without units");
  if (!manifest.config.is_object()) invariant_broken("accepted a manifest whose config is not an object");
  for (const auto& unit : manifest.units)
    if (unit.file.empty() || unit.file.find('/') != std::string::npos || unit.file[0] == '.')
      invariant_broken("accepted a unit file that is not a plain file name");

  lw::Manifest again;
  try {
    again = lw::parse_manifest(lw::manifest_to_json(manifest), "fuzz (round trip)");
  } catch (const lw::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    invariant_broken("manifest_to_json output is rejected by parse_manifest");
  }
  if (again.dtype != manifest.dtype || again.source != manifest.source || again.config != manifest.config ||
      again.generation_config != manifest.generation_config || again.units.size() != manifest.units.size())
    invariant_broken("round trip changed the manifest");
  for (size_t i = 0; i < again.units.size(); i++) {
    const auto& a = manifest.units[i];
    const auto& b = again.units[i];
    if (a.name != b.name || a.file != b.file || a.bytes != b.bytes || a.xxh3 != b.xxh3)
      invariant_broken("round trip changed a unit");
  }
  return 0;
}
