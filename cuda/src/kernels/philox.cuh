// Counter-based Gaussian noise shared by philox.cu (initial latents) and sampler.cu (DDPM/DDIM
// noise). Mirrors the CPU's `ldm_runtime::philox` exactly, operation by operation:
//   key     = (lo32(seed), hi32(seed)); counter = (lo32(index / 4), hi32(index / 4), 0, 0)
//   x[0..4] = Philox4x32-10(counter, key)   (Random123 constants and round order)
//   lane    = index % 4; pair p = lane / 2; u0 = u(x[2p]), u1 = u(x[2p+1])
//   u(x)    = ((x >> 8) + 0.5) * 2^-24      (f64, exact)
//   r       = sqrt(-2 ln u0); theta = (2 pi) u1    (f64)
//   normal  = (float)(r cos theta) for even lanes, (float)(r sin theta) for odd lanes
// Every f64 step is a single IEEE operation (nothing for nvcc to contract into an FMA); ln, cos
// and sin are CUDA's double-precision functions (<= 2 ulp in f64), so after rounding to f32 the
// result equals the CPU's except when the f64 value lies within a few f64 ulps of an f32 rounding
// boundary (about 1e-8 per element).
#ifndef LDM_PHILOX_CUH
#define LDM_PHILOX_CUH

namespace ldm {

struct U32x4 {
    unsigned int v[4];
};

__device__ __forceinline__ U32x4 philox4x32_10(unsigned long long counter, unsigned long long seed) {
    unsigned int c0 = (unsigned int)counter, c1 = (unsigned int)(counter >> 32), c2 = 0u, c3 = 0u;
    unsigned int k0 = (unsigned int)seed, k1 = (unsigned int)(seed >> 32);
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned int lo0 = 0xD2511F53u * c0, hi0 = __umulhi(0xD2511F53u, c0);
        const unsigned int lo1 = 0xCD9E8D57u * c2, hi1 = __umulhi(0xCD9E8D57u, c2);
        const unsigned int n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    U32x4 r;
    r.v[0] = c0;
    r.v[1] = c1;
    r.v[2] = c2;
    r.v[3] = c3;
    return r;
}

__device__ __forceinline__ double philox_uniform(unsigned int x) {
    return __dmul_rn(__dadd_rn((double)(x >> 8), 0.5), 1.0 / 16777216.0);
}

__device__ __forceinline__ float philox_normal(unsigned long long seed, unsigned long long index) {
    const U32x4 x = philox4x32_10(index >> 2, seed);
    const unsigned int lane = (unsigned int)(index & 3ull);
    const unsigned int p = lane >> 1;
    const double u0 = philox_uniform(x.v[2 * p]);
    const double u1 = philox_uniform(x.v[2 * p + 1]);
    const double r = __dsqrt_rn(__dmul_rn(-2.0, log(u0)));
    const double theta = __dmul_rn(6.283185307179586, u1); // 2.0 * PI, exact in f64
    const double v = (lane & 1u) ? __dmul_rn(r, sin(theta)) : __dmul_rn(r, cos(theta));
    return __double2float_rn(v);
}

} // namespace ldm

#endif // LDM_PHILOX_CUH
