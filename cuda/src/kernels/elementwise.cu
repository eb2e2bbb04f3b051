// Elementwise kernels of the UNet/decoder graph: add (residual), channel concatenation (skip
// connections, h first), per-(sample, channel) bias broadcast over voxels (conv bias and the
// ResBlock's time-embedding projection), SiLU, and fp32 <-> storage-type casts with a scale
// (latent / scale_factor before decoding). Biases are fp32 on the device whatever the storage type.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void add_impl(T* out, const T* a, const T* b, long long n) {
    for (long long i = ldm::gs_start(); i < n; i += ldm::gs_stride()) {
        out[i] = ldm::from_f32<T>(ldm::to_f32(a[i]) + ldm::to_f32(b[i]));
    }
}

// out[n, 0:ca] = a[n], out[n, ca:ca+cb] = b[n]; every channel holds `spatial` voxels.
template <typename T>
__device__ __forceinline__ void concat_impl(T* out, const T* a, const T* b, int ca, int cb,
                                            long long spatial, int batch) {
    const long long ct = (long long)ca + (long long)cb;
    const long long per_sample = ct * spatial;
    const long long total = per_sample * (long long)batch;
    for (long long i = ldm::gs_start(); i < total; i += ldm::gs_stride()) {
        const long long n = i / per_sample;
        const long long r = i - n * per_sample;
        const long long c = r / spatial;
        const long long s = r - c * spatial;
        out[i] = (c < ca) ? a[(n * ca + c) * spatial + s] : b[(n * cb + (c - ca)) * spatial + s];
    }
}

// x[n, c, s] += bias[n * bias_batch_stride + c] (stride 0: one bias vector for all samples).
template <typename T>
__device__ __forceinline__ void bias_impl(T* x, const float* bias, int channels, long long spatial,
                                          long long bias_batch_stride, long long total) {
    for (long long i = ldm::gs_start(); i < total; i += ldm::gs_stride()) {
        const long long row = i / spatial;
        const long long c = row % channels;
        const long long n = row / channels;
        x[i] = ldm::from_f32<T>(ldm::to_f32(x[i]) + bias[n * bias_batch_stride + c]);
    }
}

template <typename T>
__device__ __forceinline__ void silu_impl(T* out, const T* in, long long n) {
    for (long long i = ldm::gs_start(); i < n; i += ldm::gs_stride()) {
        out[i] = ldm::from_f32<T>(ldm::silu(ldm::to_f32(in[i])));
    }
}

template <typename T>
__device__ __forceinline__ void cast_from_f32_impl(T* out, const float* in, float scale, long long n) {
    for (long long i = ldm::gs_start(); i < n; i += ldm::gs_stride()) {
        out[i] = ldm::from_f32<T>(in[i] * scale);
    }
}

template <typename T>
__device__ __forceinline__ void cast_to_f32_impl(float* out, const T* in, float scale, long long n) {
    for (long long i = ldm::gs_start(); i < n; i += ldm::gs_stride()) {
        out[i] = ldm::to_f32(in[i]) * scale;
    }
}

#define LDM_ELEMENTWISE(SUFFIX, TYPE)                                                             \
    extern "C" __global__ void ldm_add_##SUFFIX(TYPE* out, const TYPE* a, const TYPE* b,          \
                                                long long n) {                                    \
        add_impl<TYPE>(out, a, b, n);                                                             \
    }                                                                                             \
    extern "C" __global__ void ldm_concat_channels_##SUFFIX(TYPE* out, const TYPE* a,             \
                                                            const TYPE* b, int ca, int cb,        \
                                                            long long spatial, int batch) {       \
        concat_impl<TYPE>(out, a, b, ca, cb, spatial, batch);                                     \
    }                                                                                             \
    extern "C" __global__ void ldm_add_channel_bias_##SUFFIX(TYPE* x, const float* bias,          \
                                                             int channels, long long spatial,     \
                                                             long long bias_batch_stride,         \
                                                             long long total) {                   \
        bias_impl<TYPE>(x, bias, channels, spatial, bias_batch_stride, total);                    \
    }                                                                                             \
    extern "C" __global__ void ldm_silu_##SUFFIX(TYPE* out, const TYPE* in, long long n) {        \
        silu_impl<TYPE>(out, in, n);                                                              \
    }                                                                                             \
    extern "C" __global__ void ldm_cast_from_f32_##SUFFIX(TYPE* out, const float* in, float scale, \
                                                          long long n) {                          \
        cast_from_f32_impl<TYPE>(out, in, scale, n);                                              \
    }                                                                                             \
    extern "C" __global__ void ldm_cast_to_f32_##SUFFIX(float* out, const TYPE* in, float scale,  \
                                                        long long n) {                            \
        cast_to_f32_impl<TYPE>(out, in, scale, n);                                                \
    }
LDM_FOR_EACH_DTYPE(LDM_ELEMENTWISE)
#undef LDM_ELEMENTWISE
