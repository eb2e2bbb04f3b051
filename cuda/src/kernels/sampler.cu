// Sampler updates on the fp32 latent state x, given the UNet's epsilon in the storage type.
// Per-step coefficients live in a device table filled at load time (runtime/src/cuda/sampler.rs,
// kSamplerCoefs floats per step) and are read at the device step counter, so the whole step
// (UNet + update + counter advance) is one replayable graph. Each update also writes x rounded to
// the storage type (x_t, may be null) as the next UNet input. The arithmetic mirrors the CPU's
// `schedule::ddim_step` / `ddpm_step` operation by operation with explicit round-to-nearest
// intrinsics (no FMA contraction), so for equal inputs the update is bit-identical to the CPU's.
//   DDIM, coefs: sqrt(1-a_t), sqrt(a_t), sqrt(a_prev), dir, std_dev, add_noise:
//     x0 = (x - sqrt(1-a_t) eps) / sqrt(a_t); x = sqrt(a_prev) x0 + dir eps [+ std_dev n]
//   DDPM, coefs: sqrt(1-a_t), sqrt(a_t), x0_coeff, cur_coeff, sigma, add_noise (t > 0):
//     x0 = (x - sqrt(1-a_t) eps) / sqrt(a_t) [clamped to [-1, 1] if clip];
//     x = x0_coeff x0 + cur_coeff x [+ sigma n]
//   n = philox_normal(seed, noise_offset + step * noise_stride + i).
#include "common.cuh"
#include "philox.cuh"

namespace {
constexpr int kSamplerCoefs = 6;
}

template <typename T>
__device__ __forceinline__ void ddim_impl(float* x, const T* eps, T* x_t, const float* coefs,
                                          const int* step, unsigned long long seed,
                                          unsigned long long noise_offset,
                                          unsigned long long noise_stride, long long n) {
    const long long s = (long long)*step;
    const float* c = coefs + kSamplerCoefs * s;
    const float sqrt_bt = c[0], sqrt_at = c[1], sqrt_aprev = c[2], dir = c[3], std_dev = c[4];
    const bool noisy = c[5] != 0.0f;
    const unsigned long long base = noise_offset + (unsigned long long)s * noise_stride;
    for (long long i = ldm::gs_start(); i < n; i += ldm::gs_stride()) {
        const float e = ldm::to_f32(eps[i]);
        const float x0 = __fdiv_rn(__fsub_rn(x[i], __fmul_rn(sqrt_bt, e)), sqrt_at);
        float v = __fadd_rn(__fmul_rn(sqrt_aprev, x0), __fmul_rn(dir, e));
        if (noisy) {
            v = __fadd_rn(v, __fmul_rn(std_dev, ldm::philox_normal(seed, base + (unsigned long long)i)));
        }
        x[i] = v;
        if (x_t != nullptr) {
            x_t[i] = ldm::from_f32<T>(v);
        }
    }
}

template <typename T>
__device__ __forceinline__ void ddpm_impl(float* x, const T* eps, T* x_t, const float* coefs,
                                          const int* step, int clip, unsigned long long seed,
                                          unsigned long long noise_offset,
                                          unsigned long long noise_stride, long long n) {
    const long long s = (long long)*step;
    const float* c = coefs + kSamplerCoefs * s;
    const float sqrt_bt = c[0], sqrt_at = c[1], x0_coeff = c[2], cur_coeff = c[3], sigma = c[4];
    const bool noisy = c[5] != 0.0f;
    const unsigned long long base = noise_offset + (unsigned long long)s * noise_stride;
    for (long long i = ldm::gs_start(); i < n; i += ldm::gs_stride()) {
        const float e = ldm::to_f32(eps[i]);
        const float xi = x[i];
        float x0 = __fdiv_rn(__fsub_rn(xi, __fmul_rn(sqrt_bt, e)), sqrt_at);
        if (clip != 0) {
            x0 = fminf(fmaxf(x0, -1.0f), 1.0f);
        }
        float v = __fadd_rn(__fmul_rn(x0_coeff, x0), __fmul_rn(cur_coeff, xi));
        if (noisy) {
            v = __fadd_rn(v, __fmul_rn(sigma, ldm::philox_normal(seed, base + (unsigned long long)i)));
        }
        x[i] = v;
        if (x_t != nullptr) {
            x_t[i] = ldm::from_f32<T>(v);
        }
    }
}

// Step counter kept on the device: set before a run, advanced at the end of each captured step.
extern "C" __global__ void ldm_step_set(int* step, int value) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        *step = value;
    }
}

extern "C" __global__ void ldm_step_advance(int* step) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        *step += 1;
    }
}

#define LDM_SAMPLER(SUFFIX, TYPE)                                                                  \
    extern "C" __global__ void ldm_ddim_step_##SUFFIX(                                             \
        float* x, const TYPE* eps, TYPE* x_t, const float* coefs, const int* step,                 \
        unsigned long long seed, unsigned long long noise_offset, unsigned long long noise_stride,  \
        long long n) {                                                                             \
        ddim_impl<TYPE>(x, eps, x_t, coefs, step, seed, noise_offset, noise_stride, n);            \
    }                                                                                              \
    extern "C" __global__ void ldm_ddpm_step_##SUFFIX(                                             \
        float* x, const TYPE* eps, TYPE* x_t, const float* coefs, const int* step, int clip,       \
        unsigned long long seed, unsigned long long noise_offset, unsigned long long noise_stride,  \
        long long n) {                                                                             \
        ddpm_impl<TYPE>(x, eps, x_t, coefs, step, clip, seed, noise_offset, noise_stride, n);      \
    }
LDM_FOR_EACH_DTYPE(LDM_SAMPLER)
#undef LDM_SAMPLER
