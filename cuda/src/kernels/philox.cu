// Initial Gaussian noise: out[i] = philox_normal(seed, offset + i) (see philox.cuh for the exact
// definition shared with the CPU). Writes the fp32 sampler state and, when `out_t` is non-null,
// the same values rounded to the compute type for the first UNet input.
#include "common.cuh"
#include "philox.cuh"

template <typename T>
__device__ __forceinline__ void philox_fill(float* out, T* out_t, unsigned long long seed,
                                            unsigned long long offset, long long n) {
    for (long long i = ldm::gs_start(); i < n; i += ldm::gs_stride()) {
        const float z = ldm::philox_normal(seed, offset + (unsigned long long)i);
        out[i] = z;
        if (out_t != nullptr) {
            out_t[i] = ldm::from_f32<T>(z);
        }
    }
}

#define LDM_PHILOX(SUFFIX, TYPE)                                                                   \
    extern "C" __global__ void ldm_philox_normal_##SUFFIX(float* out, TYPE* out_t,                 \
                                                          unsigned long long seed,                 \
                                                          unsigned long long offset, long long n) { \
        philox_fill<TYPE>(out, out_t, seed, offset, n);                                            \
    }
LDM_FOR_EACH_DTYPE(LDM_PHILOX)
#undef LDM_PHILOX
