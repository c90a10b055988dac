// The kernels for any CPU: plain C++ as the compiler vectorises it for the build's baseline.
#include "backend/cpu_kernels_impl.h"

namespace lw::cpu {

extern const Kernels kPortableKernels = {Level::Portable, dot4x4_impl,  dot4_impl,   dot4_half_impl,
                                         half_to_f32_impl, rmsnorm_impl, swiglu_impl, attend_impl};

}  // namespace lw::cpu
