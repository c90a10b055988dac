// The integer products for the avx512 level (compiled with its flags: CMakeLists.txt).
#include "backend/quant_kernels_impl.h"

namespace lw::cpu {

extern const QuantKernels kAvx512QuantKernels = {quantize_impl, {}};

}  // namespace lw::cpu
