// The body of the integer products (quant_kernels.h), written once and compiled by each
// quant_kernels_<level>.cpp with that level's flags. Internal linkage only, as in
// cpu_kernels_impl.h. Include only from quant_kernels_<level>.cpp.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "backend/quant_kernels.h"

namespace lw::cpu {
namespace {

void quantize_impl(const float* x, int64_t n, int8_t* q, float* scales, int32_t* sums) {
  for (int64_t b = 0; b < n / kActivationBlock; b++) {
    const float* in = x + b * kActivationBlock;
    float amax = 0;
    for (int i = 0; i < kActivationBlock; i++) amax = std::fmax(amax, std::fabs(in[i]));
    const float d = amax / 127.0f, inverse = d > 0 ? 1.0f / d : 0.0f;
    scales[b] = d;
    for (int half = 0; half < 2; half++) {
      int32_t sum = 0;
      for (int i = half * 16; i < half * 16 + 16; i++) {
        const int8_t value = static_cast<int8_t>(std::nearbyint(in[i] * inverse));
        q[b * kActivationBlock + i] = value;
        sum += value;
      }
      sums[b * 2 + half] = sum;
    }
  }
}

}  // namespace
}  // namespace lw::cpu
