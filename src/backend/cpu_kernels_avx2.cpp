// The kernels for CPUs with AVX2, FMA and F16C: built with those flags (CMakeLists.txt).
#include "backend/cpu_kernels_impl.h"

namespace lw::cpu {

extern const Kernels kAvx2Kernels = {Level::Avx2,       dot4x4_impl,  dot4_impl,   dot4_half_impl,
                                     half_to_f32_impl, rmsnorm_impl, swiglu_impl, attend_impl};

}  // namespace lw::cpu
