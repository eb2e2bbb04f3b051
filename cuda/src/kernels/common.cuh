// Shared device helpers of the brats-ldm kernels: element types (fp32/fp16/bf16 storage with fp32
// arithmetic), SiLU, grid-stride indices, and the macro that stamps out one extern "C" entry
// point per storage type. Every kernel file includes this header; build.rs compiles all kernel
// files as ONE translation unit, so everything here is `static`/inline and include-guarded.
#ifndef LDM_COMMON_CUH
#define LDM_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace ldm {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// SiLU(x) = x * sigmoid(x) = x / (1 + exp(-x)); exact limits: -0 for x -> -inf, x for x -> inf.
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// First index and stride of a 1-D grid-stride loop, in 64 bits (volumes exceed 2^31 elements).
__device__ __forceinline__ long long gs_start() {
    return (long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x;
}
__device__ __forceinline__ long long gs_stride() { return (long long)gridDim.x * (long long)blockDim.x; }

} // namespace ldm

// LDM_FOR_EACH_DTYPE(M) expands M(suffix, type) for the three storage types. Kernel entry points
// are named `ldm_<op>_<suffix>`; runtime/src/cuda/kernels.rs holds the same list.
#define LDM_FOR_EACH_DTYPE(M) \
    M(f32, float)             \
    M(f16, __half)            \
    M(bf16, __nv_bfloat16)

#endif // LDM_COMMON_CUH
