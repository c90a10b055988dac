// The integer products for the avx2 level (compiled with its flags: CMakeLists.txt).
#include "backend/quant_kernels_impl.h"

namespace lw::cpu {

extern const QuantKernels kAvx2QuantKernels = make_quant_kernels();

}  // namespace lw::cpu
