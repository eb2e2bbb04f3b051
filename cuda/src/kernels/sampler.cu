// Sampler updates on the fp32 latent state x, given the UNet's output m in the storage type.
// Per-step coefficient rows live in a device table filled at load time (ldm-runtime's
// `sampler::plan`, kSamplerCoefs floats per step) and are read at the device step counter, so the
// whole step (UNet + update + counter advance) is one replayable graph. Each update also writes x
// rounded to the storage type (x_t, may be null) as the next UNet input. The arithmetic repeats
// ldm-runtime's `sampler::ddim_update` / `ddpm_update` / `pndm_update` operation by operation
// with explicit round-to-nearest intrinsics (no FMA contraction), so for equal inputs the update
// is bit-identical to the CPU's. prediction: 0 epsilon, 1 sample, 2 v_prediction.
//   DDIM, row: sqrt(1-a_t), sqrt(a_t), sqrt(a_prev), dir, std_dev, add_noise:
//     (x0, e) predicted from (x, m); x0 clamped to [-1, 1] if clip;
//     x = sqrt(a_prev) x0 + dir e [+ std_dev n]
//   DDPM, row: sqrt(1-a_t), sqrt(a_t), x0_coeff, cur_coeff, sigma, add_noise (t > 0):
//     x0 predicted [clamped if clip]; x = x0_coeff x0 + cur_coeff x [+ sigma n]
//   PNDM, row: see pndm_impl; state: 4 slots of past outputs, the start sample, the accumulator.
//   n = philox_normal(seed, noise_offset + step * noise_stride + i).
#include "common.cuh"
#include "philox.cuh"

namespace {
constexpr int kSamplerCoefs = 20;
constexpr float kSrcModel = 4.0f;
constexpr long long kStateCur = 4, kStateAcc = 5;
}

// x0 and noise predicted from the state x and the model output m (the noise from the unclamped x0).
__device__ __forceinline__ void predict(int prediction, float x, float m, float sqrt_bt, float sqrt_at,
                                        float* x0, float* e) {
    if (prediction == 0) {
        *x0 = __fdiv_rn(__fsub_rn(x, __fmul_rn(sqrt_bt, m)), sqrt_at);
        *e = m;
    } else if (prediction == 1) {
        *x0 = m;
        *e = __fdiv_rn(__fsub_rn(x, __fmul_rn(sqrt_at, m)), sqrt_bt);
    } else {
        *x0 = __fsub_rn(__fmul_rn(sqrt_at, x), __fmul_rn(sqrt_bt, m));
        *e = __fadd_rn(__fmul_rn(sqrt_at, m), __fmul_rn(sqrt_bt, x));
    }
}

template <typename T>
__device__ __forceinline__ void ddim_impl(float* x, const T* eps, T* x_t, const float* coefs,
                                          const int* step, int prediction, int clip,
                                          unsigned long long seed, unsigned long long noise_offset,
                                          unsigned long long noise_stride, long long n) {
    const long long s = (long long)*step;
    const float* c = coefs + kSamplerCoefs * s;
    const float sqrt_bt = c[0], sqrt_at = c[1], sqrt_aprev = c[2], dir = c[3], std_dev = c[4];
    const bool noisy = c[5] != 0.0f;
    const unsigned long long base = noise_offset + (unsigned long long)s * noise_stride;
    for (long long i = ldm::gs_start(); i < n; i += ldm::gs_stride()) {
        float x0, e;
        predict(prediction, x[i], ldm::to_f32(eps[i]), sqrt_bt, sqrt_at, &x0, &e);
        if (clip != 0) {
            x0 = fminf(fmaxf(x0, -1.0f), 1.0f);
        }
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
                                          const int* step, int prediction, int clip,
                                          unsigned long long seed, unsigned long long noise_offset,
                                          unsigned long long noise_stride, long long n) {
    const long long s = (long long)*step;
    const float* c = coefs + kSamplerCoefs * s;
    const float sqrt_bt = c[0], sqrt_at = c[1], x0_coeff = c[2], cur_coeff = c[3], sigma = c[4];
    const bool noisy = c[5] != 0.0f;
    const unsigned long long base = noise_offset + (unsigned long long)s * noise_stride;
    for (long long i = ldm::gs_start(); i < n; i += ldm::gs_stride()) {
        const float m = ldm::to_f32(eps[i]);
        const float xi = x[i];
        float x0;
        if (prediction == 0) {
            x0 = __fdiv_rn(__fsub_rn(xi, __fmul_rn(sqrt_bt, m)), sqrt_at);
        } else if (prediction == 1) {
            x0 = m;
        } else {
            x0 = __fsub_rn(__fmul_rn(sqrt_at, xi), __fmul_rn(sqrt_bt, m));
        }
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

// PNDM row: sqrt(a_t), sqrt(1-a_t), sample_coeff, a_prev - a_t, denom, w0..w3, src0..src3 (slot
// 0..3, 4 = this step's output m, 5 = accumulator, < 0 unused), scale, divisor, acc_mode (1 set
// to acc_coef m, 2 add acc_coef m), acc_coef, base_is_cur, save_cur, store_slot (< 0 none).
//   sum = w0 s0 (+ wk sk); combined = scale sum / divisor; base = x or the start sample;
//   combined = sqrt(a_t) combined + sqrt(1-a_t) base for v_prediction;
//   x = sample_coeff base - (a_prev - a_t) combined / denom.
// state holds 6 vectors of n floats: slots 0..3, the start sample (4), the accumulator (5).
template <typename T>
__device__ __forceinline__ void pndm_impl(float* x, const T* eps, T* x_t, const float* coefs,
                                          const int* step, int prediction, float* state,
                                          long long n) {
    const long long s = (long long)*step;
    const float* c = coefs + kSamplerCoefs * s;
    const float sqrt_at = c[0], sqrt_bt = c[1], sample_coeff = c[2], alpha_diff = c[3], denom = c[4];
    const float scale = c[13], divisor = c[14], acc_mode = c[15], acc_coef = c[16];
    const bool base_is_cur = c[17] != 0.0f, save_cur = c[18] != 0.0f;
    const float store = c[19];
    for (long long i = ldm::gs_start(); i < n; i += ldm::gs_stride()) {
        const float xi = x[i];
        const float mi = ldm::to_f32(eps[i]);
        float sum = 0.0f;
        for (int k = 0; k < 4; ++k) {
            const float src = c[9 + k];
            if (k > 0 && src < 0.0f) {
                continue;
            }
            const float v = src == kSrcModel ? mi : state[(long long)src * n + i];
            const float term = __fmul_rn(c[5 + k], v);
            sum = k == 0 ? term : __fadd_rn(sum, term);
        }
        const float combined0 = __fdiv_rn(__fmul_rn(scale, sum), divisor);
        const float base = base_is_cur ? state[kStateCur * n + i] : xi;
        const float combined = prediction == 2
            ? __fadd_rn(__fmul_rn(sqrt_at, combined0), __fmul_rn(sqrt_bt, base))
            : combined0;
        const float v = __fsub_rn(__fmul_rn(sample_coeff, base),
                                  __fdiv_rn(__fmul_rn(alpha_diff, combined), denom));
        x[i] = v;
        if (acc_mode == 1.0f) {
            state[kStateAcc * n + i] = __fmul_rn(acc_coef, mi);
        } else if (acc_mode == 2.0f) {
            state[kStateAcc * n + i] = __fadd_rn(state[kStateAcc * n + i], __fmul_rn(acc_coef, mi));
        }
        if (save_cur) {
            state[kStateCur * n + i] = xi;
        }
        if (store >= 0.0f) {
            state[(long long)store * n + i] = mi;
        }
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
        float* x, const TYPE* eps, TYPE* x_t, const float* coefs, const int* step, int prediction, \
        int clip, unsigned long long seed, unsigned long long noise_offset,                        \
        unsigned long long noise_stride, long long n) {                                            \
        ddim_impl<TYPE>(x, eps, x_t, coefs, step, prediction, clip, seed, noise_offset,           \
                        noise_stride, n);                                                          \
    }                                                                                              \
    extern "C" __global__ void ldm_ddpm_step_##SUFFIX(                                             \
        float* x, const TYPE* eps, TYPE* x_t, const float* coefs, const int* step, int prediction, \
        int clip, unsigned long long seed, unsigned long long noise_offset,                        \
        unsigned long long noise_stride, long long n) {                                            \
        ddpm_impl<TYPE>(x, eps, x_t, coefs, step, prediction, clip, seed, noise_offset,           \
                        noise_stride, n);                                                          \
    }                                                                                              \
    extern "C" __global__ void ldm_pndm_step_##SUFFIX(                                             \
        float* x, const TYPE* eps, TYPE* x_t, const float* coefs, const int* step, int prediction, \
        float* state, long long n) {                                                               \
        pndm_impl<TYPE>(x, eps, x_t, coefs, step, prediction, state, n);                           \
    }
LDM_FOR_EACH_DTYPE(LDM_SAMPLER)
#undef LDM_SAMPLER
