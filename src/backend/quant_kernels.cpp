// The table of integer products per instruction-set level (quant_kernels.h).
#include "backend/quant_kernels.h"

namespace lw::cpu {

extern const QuantKernels kPortableQuantKernels;
#if defined(__x86_64__)
extern const QuantKernels kAvx2QuantKernels, kAvx512QuantKernels;
#endif

const QuantKernels& quant_kernels(Level level) {
#if defined(__x86_64__)
  if (level >= Level::Avx512) return kAvx512QuantKernels;
  if (level == Level::Avx2) return kAvx2QuantKernels;
#endif
  (void)level;
  return kPortableQuantKernels;
}

}  // namespace lw::cpu
