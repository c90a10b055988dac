// The integer products for the portable level (compiled with its flags: CMakeLists.txt).
#include "backend/quant_kernels_impl.h"

namespace lw::cpu {

extern const QuantKernels kPortableQuantKernels = {quantize_impl, {}};

}  // namespace lw::cpu
