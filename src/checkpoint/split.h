// `layerwise split`: rewrites a checkpoint as one safetensors file per streaming unit plus a
// manifest, so each unit is one sequential read. Files appear only when complete (written to a
// temporary name, synced, renamed); an interrupted split resumes where it stopped.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "format/dtype.h"
#include "model/llama.h"

namespace lw {

struct SplitOptions {
  std::string model;            // source: a Hugging Face directory or another split
  std::string out;              // destination directory
  std::optional<DType> dtype;   // store every tensor in this type; unset keeps the source's
  bool quiet = false;
  // --quantize: a scheme of quantize_schemes() ("q4_k_m", "q8_0", ...); empty: no quantization.
  // Matrices are quantized (see split_tensor_type), vectors keep their float type. Not with dtype.
  std::string quantize = {};
};

struct SplitResult {
  int units_written = 0;
  int units_reused = 0;  // already complete from an interrupted run
  uint64_t bytes_written = 0;
};

SplitResult split_checkpoint(const SplitOptions& options);

// The --quantize schemes: "q8_0, q4_0, q4_k, q5_k, q6_k, iq4_xs, q4_k_m" (for messages and help).
const std::string& quantize_schemes();
bool quantize_scheme_known(const std::string& scheme);

// The type a split with --quantize `scheme` stores one tensor in. Vectors keep `source` (their
// float type). As llama-quantize, lm_head (and the embedding when it is tied to it) is Q6_K for
// every scheme but q8_0. Other matrices get the scheme's type: every matrix alike for the
// single-type schemes, llama.cpp's Q4_K_M mix for "q4_k_m" (Q6_K for v_proj and down_proj on the
// "more bits" layers: the first and last eighth and every third between; Q4_K for the rest). A row length that is not a multiple of the type's
// block falls back as llama.cpp does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS ->
// IQ4_NL), and to `source` when not even a multiple of 32.
DType split_tensor_type(const std::string& scheme, Role role, int layer, int layers, bool tied_embeddings,
                        const std::vector<int64_t>& shape, DType source);


// Rechecks size and checksum of every unit file listed in DIR/manifest.json, then opens the
// split as the engine would. Throws lw::Error naming the first file that does not match.
int verify_split(const std::string& dir, bool quiet);

}  // namespace lw
