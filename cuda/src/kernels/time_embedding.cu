// Sinusoidal timestep embedding of DiffusionModelUNet (MONAI Generative 0.2.3), cos first:
//   half = dim / 2; freq_i = exp((-ln(10000) * i) / half) (fp32, the same operation order);
//   emb[b] = [cos(t freq_0..half), sin(t freq_0..half)] (+ one zero when dim is odd).
// The timestep comes from a device table indexed by a device step counter (`step` may be null:
// index 0), so a captured CUDA graph replays every sampling step without host work. The MLP
// (Linear -> SiLU -> Linear) runs as cuBLAS GEMMs plus ldm_silu_<t> from elementwise.cu.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void sinusoid_impl(T* out, const float* timesteps, const int* step,
                                              int batch, int dim) {
    const int half = dim / 2;
    const float t = timesteps[step != nullptr ? *step : 0];
    const long long total = (long long)batch * dim;
    for (long long idx = ldm::gs_start(); idx < total; idx += ldm::gs_stride()) {
        const int i = (int)(idx % dim);
        float value = 0.0f;
        if (i < 2 * half) {
            const int f = i < half ? i : i - half;
            const float exponent = (-9.210340371976184f * (float)f) / (float)half;
            const float arg = t * expf(exponent);
            value = i < half ? cosf(arg) : sinf(arg);
        }
        out[idx] = ldm::from_f32<T>(value);
    }
}

#define LDM_TIME_EMBEDDING(SUFFIX, TYPE)                                                         \
    extern "C" __global__ void ldm_timestep_embedding_##SUFFIX(                                  \
        TYPE* out, const float* timesteps, const int* step, int batch, int dim) {                \
        sinusoid_impl<TYPE>(out, timesteps, step, batch, dim);                                   \
    }
LDM_FOR_EACH_DTYPE(LDM_TIME_EMBEDDING)
#undef LDM_TIME_EMBEDDING
