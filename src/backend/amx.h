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

// Activations for amx_matmul_block: x [tokens, cols] rounded to BF16 (nearest even) into out,
// which holds amx_padded_tokens(tokens) x amx_padded_cols(cols) values in tile order (zeroed
// beforehand for the padding tokens). `x` and `out` may start at any multiple of 16 tokens.
int amx_padded_tokens(int tokens);
int64_t amx_padded_cols(int64_t cols);
void amx_activations(const float* x, int tokens, int64_t cols, uint16_t* out);

// y[t, r] = sum_c x[t, c] * bf16(w[r, c]) + bias[r] for t < tokens and the 32 weight rows from
// r0 (fewer at the end), x as amx_activations made it. `scratch` holds the rows repacked for the
// tiles (any weight dtype is rounded to BF16 there).
void amx_matmul_block(float* y, const uint16_t* x, int tokens, const WeightView& w, const float* bias, int64_t r0,
                      std::vector<uint16_t>& scratch);

}  // namespace lw
