// `layerwise split`: rewrites a checkpoint as one safetensors file per streaming unit plus a
// manifest, so each unit is one sequential read. Files appear only when complete (written to a
// temporary name, synced, renamed); an interrupted split resumes where it stopped.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "format/dtype.h"

namespace lw {

struct SplitOptions {
  std::string model;            // source: a Hugging Face directory or another split
  std::string out;              // destination directory
  std::optional<DType> dtype;   // store every tensor in this type; unset keeps the source's
  bool quiet = false;
};

struct SplitResult {
  int units_written = 0;
  int units_reused = 0;  // already complete from an interrupted run
  uint64_t bytes_written = 0;
};

SplitResult split_checkpoint(const SplitOptions& options);

// Rechecks size and checksum of every unit file listed in DIR/manifest.json, then opens the
// split as the engine would. Throws lw::Error naming the first file that does not match.
int verify_split(const std::string& dir, bool quiet);

}  // namespace lw
