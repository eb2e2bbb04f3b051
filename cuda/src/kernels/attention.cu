// Flash-style self-attention over all voxels of a level, never materialising the N x N matrix.
// Layout: q, k, v are channel-major per sample, exactly as a 1x1 projection of an NCDHW tensor
// leaves them: element (b, c, n) at b * qkv_batch_stride + c * tokens + n, with head h owning
// channels [h * HD, (h + 1) * HD). Optional fp32 biases (to_q/to_k/to_v) are added on load.
// Output: out[b, c, n] (+)= softmax(q k^T * scale) v for channel c of head h, channel-major with
// out_batch_stride; when `residual` is non-null it is added (residual may alias out).
// Grid (ceil(tokens / kQ), heads, batch), block kQ threads, one query per thread; keys/values
// stream through shared memory in tiles; online softmax in base 2, fp32 accumulation.
#include "common.cuh"

namespace {

constexpr int kQ = 128;

template <int HD> struct Tile {
    static constexpr int keys = HD <= 64 ? 64 : 32;
};

template <typename T, int HD>
__device__ __forceinline__ void attention_impl(const T* q, const T* k, const T* v, const float* bq,
                                               const float* bk, const float* bv, T* out,
                                               const T* residual, int tokens,
                                               long long qkv_batch_stride,
                                               long long out_batch_stride, float scale) {
    constexpr int BK = Tile<HD>::keys;
    __shared__ float ks[BK][HD + 1];
    __shared__ float vs[BK][HD + 1];

    const int head = (int)blockIdx.y;
    const long long b = (long long)blockIdx.z;
    const int n = (int)(blockIdx.x * kQ + threadIdx.x);
    const bool active = n < tokens;
    const long long chan0 = (long long)head * HD;
    const T* qb = q + b * qkv_batch_stride + chan0 * tokens;
    const T* kb = k + b * qkv_batch_stride + chan0 * tokens;
    const T* vb = v + b * qkv_batch_stride + chan0 * tokens;
    const float scale_log2 = scale * 1.4426950408889634f;

    float qr[HD];
    float acc[HD];
#pragma unroll
    for (int d = 0; d < HD; ++d) {
        float val = 0.0f;
        if (active) {
            val = ldm::to_f32(qb[(long long)d * tokens + n]);
            if (bq != nullptr) {
                val += bq[chan0 + d];
            }
        }
        qr[d] = val * scale_log2;
        acc[d] = 0.0f;
    }
    float row_max = -INFINITY;
    float row_sum = 0.0f;

    for (int key0 = 0; key0 < tokens; key0 += BK) {
        const int count = min(BK, tokens - key0);
        __syncthreads();
        for (int idx = (int)threadIdx.x; idx < BK * HD; idx += kQ) {
            const int d = idx / BK, j = idx % BK;
            float kv = 0.0f, vv = 0.0f;
            if (j < count) {
                const long long off = (long long)d * tokens + key0 + j;
                kv = ldm::to_f32(kb[off]);
                vv = ldm::to_f32(vb[off]);
                if (bk != nullptr) {
                    kv += bk[chan0 + d];
                }
                if (bv != nullptr) {
                    vv += bv[chan0 + d];
                }
            }
            ks[j][d] = kv;
            vs[j][d] = vv;
        }
        __syncthreads();
        if (active) {
            for (int j = 0; j < count; ++j) {
                float s = 0.0f;
#pragma unroll
                for (int d = 0; d < HD; ++d) {
                    s += qr[d] * ks[j][d];
                }
                if (s > row_max) {
                    const float corr = exp2f(row_max - s);
                    row_sum *= corr;
#pragma unroll
                    for (int d = 0; d < HD; ++d) {
                        acc[d] *= corr;
                    }
                    row_max = s;
                }
                const float p = exp2f(s - row_max);
                row_sum += p;
#pragma unroll
                for (int d = 0; d < HD; ++d) {
                    acc[d] += p * vs[j][d];
                }
            }
        }
    }
    if (!active) {
        return;
    }
    const float inv = 1.0f / row_sum;
    T* ob = out + b * out_batch_stride + chan0 * tokens;
    const T* rb = residual != nullptr ? residual + b * out_batch_stride + chan0 * tokens : nullptr;
#pragma unroll
    for (int d = 0; d < HD; ++d) {
        const long long off = (long long)d * tokens + n;
        float o = acc[d] * inv;
        if (rb != nullptr) {
            o += ldm::to_f32(rb[off]);
        }
        ob[off] = ldm::from_f32<T>(o);
    }
}

} // namespace

#define LDM_ATTENTION_HD(SUFFIX, TYPE, HD)                                                         \
    extern "C" __global__ void __launch_bounds__(kQ) ldm_attention_hd##HD##_##SUFFIX(              \
        const TYPE* q, const TYPE* k, const TYPE* v, const float* bq, const float* bk,             \
        const float* bv, TYPE* out, const TYPE* residual, int tokens, long long qkv_batch_stride,  \
        long long out_batch_stride, float scale) {                                                 \
        attention_impl<TYPE, HD>(q, k, v, bq, bk, bv, out, residual, tokens, qkv_batch_stride,     \
                                 out_batch_stride, scale);                                         \
    }
#define LDM_ATTENTION(SUFFIX, TYPE)          \
    LDM_ATTENTION_HD(SUFFIX, TYPE, 16)       \
    LDM_ATTENTION_HD(SUFFIX, TYPE, 32)       \
    LDM_ATTENTION_HD(SUFFIX, TYPE, 64)       \
    LDM_ATTENTION_HD(SUFFIX, TYPE, 128)
LDM_FOR_EACH_DTYPE(LDM_ATTENTION)
#undef LDM_ATTENTION
#undef LDM_ATTENTION_HD
