// GroupNorm (biased variance per (sample, group), affine) with optional fused SiLU, in three
// launches so that large volumes use the whole GPU and the result does not depend on timing. The
// statistics are folded into a per-channel scale and shift, the same [2C] layout per sample as
// the CPU's `norm::gn_stats` (scale[c] = gamma[c] * rstd, shift[c] = beta[c] - mean * scale[c]),
// so a plan's Stats op maps to launches 1+2 and a normalised conv input to launch 3.
//   1. ldm_groupnorm_partial_<t>: grid (splits, N*G). Block `split` of group `ng` computes a
//      Welford triple (count, mean, M2) over its contiguous chunk of the group (a group's C/G
//      channels are contiguous in NCDHW) -> partial[(ng * splits + split) * 3 ..].
//   2. ldm_groupnorm_finalize: one thread per (n, c) merges its group's splits in index order
//      (Chan et al.) -> scale_shift[n * 2C + c], scale_shift[n * 2C + C + c].
//   3. ldm_groupnorm_apply_<t>: grid (x blocks, N*C rows); y = x * scale + shift, then SiLU when
//      `silu` != 0. In-place (y == x) is allowed.
// All statistics are fp32 whatever the storage type; gamma/beta are fp32.
#include "common.cuh"

namespace {

constexpr int kGnThreads = 256;

struct Welford {
    float n;
    float mean;
    float m2;
};

__device__ __forceinline__ Welford welford_merge(Welford a, Welford b) {
    const float n = a.n + b.n;
    if (b.n == 0.0f) {
        return a;
    }
    if (a.n == 0.0f) {
        return b;
    }
    const float delta = b.mean - a.mean;
    const float wb = b.n / n;
    Welford r;
    r.n = n;
    r.mean = a.mean + delta * wb;
    r.m2 = a.m2 + b.m2 + delta * delta * a.n * wb;
    return r;
}

__device__ __forceinline__ Welford warp_reduce(Welford w) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        Welford o;
        o.n = __shfl_down_sync(0xffffffffu, w.n, off);
        o.mean = __shfl_down_sync(0xffffffffu, w.mean, off);
        o.m2 = __shfl_down_sync(0xffffffffu, w.m2, off);
        w = welford_merge(w, o);
    }
    return w;
}

template <typename T>
__device__ __forceinline__ void partial_impl(const T* x, float* partial, long long group_elems,
                                             long long chunk, int splits) {
    const int split = (int)blockIdx.x;
    const long long ng = (long long)blockIdx.y;
    const long long begin = (long long)split * chunk;
    long long end = begin + chunk;
    if (end > group_elems) {
        end = group_elems;
    }
    const T* base = x + ng * group_elems;
    Welford w = {0.0f, 0.0f, 0.0f};
    for (long long i = begin + threadIdx.x; i < end; i += kGnThreads) {
        const float v = ldm::to_f32(base[i]);
        w.n += 1.0f;
        const float delta = v - w.mean;
        w.mean += delta / w.n;
        w.m2 += delta * (v - w.mean);
    }
    w = warp_reduce(w);
    __shared__ Welford warp_results[kGnThreads / 32];
    const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    if (lane == 0) {
        warp_results[warp] = w;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        Welford total = warp_results[0];
        for (int k = 1; k < kGnThreads / 32; ++k) {
            total = welford_merge(total, warp_results[k]);
        }
        float* out = partial + (ng * (long long)splits + split) * 3;
        out[0] = total.n;
        out[1] = total.mean;
        out[2] = total.m2;
    }
}

template <typename T>
__device__ __forceinline__ void apply_impl(const T* x, T* y, const float* scale_shift, int channels,
                                           long long spatial, int silu) {
    const long long row = (long long)blockIdx.y; // n * channels + c
    const long long c = row % channels;
    const long long n = row / channels;
    const float scale = scale_shift[n * 2 * channels + c];
    const float shift = scale_shift[n * 2 * channels + channels + c];
    const T* src = x + row * spatial;
    T* dst = y + row * spatial;
    for (long long s = (long long)blockIdx.x * blockDim.x + threadIdx.x; s < spatial;
         s += (long long)gridDim.x * blockDim.x) {
        float v = ldm::to_f32(src[s]) * scale + shift;
        if (silu != 0) {
            v = ldm::silu(v);
        }
        dst[s] = ldm::from_f32<T>(v);
    }
}

} // namespace

extern "C" __global__ void ldm_groupnorm_finalize(const float* partial, const float* gamma,
                                                  const float* beta, float* scale_shift, int batch,
                                                  int channels, int groups, int splits, float eps) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * channels) {
        return;
    }
    const int c = (int)(idx % channels);
    const long long n = idx / channels;
    const long long ng = n * groups + c / (channels / groups);
    const float* p = partial + ng * splits * 3;
    Welford total = {p[0], p[1], p[2]};
    for (int k = 1; k < splits; ++k) {
        const Welford w = {p[3 * k], p[3 * k + 1], p[3 * k + 2]};
        total = welford_merge(total, w);
    }
    const float var = total.n > 0.0f ? total.m2 / total.n : 0.0f;
    const float rstd = 1.0f / sqrtf(fmaxf(var, 0.0f) + eps);
    const float scale = gamma[c] * rstd;
    scale_shift[n * 2 * channels + c] = scale;
    scale_shift[n * 2 * channels + channels + c] = beta[c] - total.mean * scale;
}

#define LDM_GROUPNORM(SUFFIX, TYPE)                                                              \
    extern "C" __global__ void __launch_bounds__(kGnThreads) ldm_groupnorm_partial_##SUFFIX(     \
        const TYPE* x, float* partial, long long group_elems, long long chunk, int splits) {     \
        partial_impl<TYPE>(x, partial, group_elems, chunk, splits);                              \
    }                                                                                            \
    extern "C" __global__ void ldm_groupnorm_apply_##SUFFIX(                                     \
        const TYPE* x, TYPE* y, const float* scale_shift, int channels, long long spatial,       \
        int silu) {                                                                              \
        apply_impl<TYPE>(x, y, scale_shift, channels, spatial, silu);                            \
    }
LDM_FOR_EACH_DTYPE(LDM_GROUPNORM)
#undef LDM_GROUPNORM
