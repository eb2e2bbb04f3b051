// Nearest-neighbour x2 upsampling of NCDHW volumes: out[nc, z, y, x] = in[nc, z/2, y/2, x/2].
// `rows` = N*C; input spatial dims (d, h, w); output (2d, 2h, 2w).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void upsample2x(const T* in, T* out, long long rows, int d, int h, int w) {
    const long long ow = 2LL * w, oh = 2LL * h, od = 2LL * d;
    const long long total = rows * od * oh * ow;
    for (long long o = ldm::gs_start(); o < total; o += ldm::gs_stride()) {
        const long long x = o % ow;
        long long t = o / ow;
        const long long y = t % oh;
        t /= oh;
        const long long z = t % od;
        const long long r = t / od;
        out[o] = in[((r * d + z / 2) * h + y / 2) * w + x / 2];
    }
}

#define LDM_UPSAMPLE(SUFFIX, TYPE)                                                               \
    extern "C" __global__ void ldm_upsample_nearest2x_##SUFFIX(const TYPE* in, TYPE* out,        \
                                                               long long rows, int d, int h,     \
                                                               int w) {                          \
        upsample2x<TYPE>(in, out, rows, d, h, w);                                                \
    }
LDM_FOR_EACH_DTYPE(LDM_UPSAMPLE)
#undef LDM_UPSAMPLE
