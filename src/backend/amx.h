// Matrix products on Intel AMX (BF16 tiles, F32 accumulation), for the CPU backend's
// many-token matmuls when the compute type is BF16. Backend-internal.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"

namespace lw {

// The CPU has AMX-BF16 and the kernel let this process use tile data (arch_prctl
// ARCH_REQ_XCOMP_PERM, asked once). False everywhere else.
bool amx_available();

// Activations for amx_matmul_blocks: x [tokens, cols] rounded to BF16 (nearest even) into out,
// which holds amx_padded_tokens(tokens) x amx_padded_cols(cols) values in tile order (the padding
// tokens' rows may hold anything: they only reach outputs that are not stored). `x` and `out` may
// start at any multiple of 16 tokens.
int amx_padded_tokens(int tokens);
int64_t amx_padded_cols(int64_t cols);
void amx_activations(const float* x, int tokens, int64_t cols, uint16_t* out);

struct AmxScratch {  // per thread
  std::vector<uint16_t> packed;  // weight blocks in the tiles' layout
};

// y[t, r] = sum_c x[t, c] * bf16(w[r, c]) + bias[r] for t < tokens and the weight rows of 32-row
// blocks first_block .. last_block - 1 (the last may be partial), x as amx_activations made it.
// The rows are repacked for the tiles in `scratch` (F32 and F16 rounded to BF16 on the way).
void amx_matmul_blocks(float* y, const uint16_t* x, int tokens, const WeightView& w, const float* bias, int64_t first_block,
                       int64_t last_block, AmxScratch& scratch);

}  // namespace lw
