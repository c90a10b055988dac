// The integer products for the avx512 level (compiled with its flags: CMakeLists.txt). These
// include the AVX2 ones, so this level runs the AVX2 code paths (-mavx2 is among its flags),
// compiled with the AVX-512 flags on.
#include "backend/quant_kernels_impl.h"

namespace lw::cpu {

extern const QuantKernels kAvx512QuantKernels = make_quant_kernels();

}  // namespace lw::cpu
