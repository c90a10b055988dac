// The integer products for the portable level (compiled with its flags: CMakeLists.txt).
#include "backend/quant_kernels_impl.h"

namespace lw::cpu {

extern const QuantKernels kPortableQuantKernels = make_quant_kernels();

}  // namespace lw::cpu
