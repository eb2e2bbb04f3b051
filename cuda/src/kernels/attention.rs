//! Launcher of `attention.cu`: flash-style self-attention over channel-major q/k/v (no N x N
//! matrix), online softmax, optional residual.

use cudarc::driver::PushKernelArg;
use ldm_weights::DType;

use super::{config, i32_of, i64_of, Kernels};
use crate::arena::DevPtr;
use crate::error::CudaError;
use crate::geometry;

/// Arguments of a flash-attention launch (channel-major q/k/v, see cuda/attention.cu).
#[derive(Debug, Clone, Copy)]
pub struct AttentionArgs {
    pub q: DevPtr,
    pub k: DevPtr,
    pub v: DevPtr,
    /// fp32 biases of to_q/to_k/to_v, or NULL.
    pub bias_q: DevPtr,
    pub bias_k: DevPtr,
    pub bias_v: DevPtr,
    pub out: DevPtr,
    /// Added to the output (may equal `out`), or NULL.
    pub residual: DevPtr,
    pub batch: usize,
    pub channels: usize,
    pub tokens: usize,
    pub head_dim: usize,
    /// Elements between samples in q/k/v (channels * tokens, or 3x that when stacked).
    pub qkv_batch_stride: usize,
    /// Elements between samples in out/residual.
    pub out_batch_stride: usize,
}
impl Kernels {
    /// Flash attention, scale 1/sqrt(head_dim), optional residual add.
    pub fn attention(&self, dtype: DType, a: &AttentionArgs) -> Result<(), CudaError> {
        const K: &str = "ldm_attention";
        let l = geometry::attention(a.batch, a.channels, a.tokens, a.head_dim)?;
        let tokens = i32_of(K, a.tokens)?;
        let qkv_bs = i64_of(K, a.qkv_batch_stride)?;
        let out_bs = i64_of(K, a.out_batch_stride)?;
        let scale = 1.0f32 / (a.head_dim as f32).sqrt();
        let f = self.typed(&format!("attention_hd{}", a.head_dim), dtype)?;
        let (q, k, v, bq, bk, bv, out, res) = (
            a.q.0,
            a.k.0,
            a.v.0,
            a.bias_q.0,
            a.bias_k.0,
            a.bias_v.0,
            a.out.0,
            a.residual.0,
        );
        let mut b = self.stream.launch_builder(f);
        b.arg(&q)
            .arg(&k)
            .arg(&v)
            .arg(&bq)
            .arg(&bk)
            .arg(&bv)
            .arg(&out)
            .arg(&res);
        b.arg(&tokens).arg(&qkv_bs).arg(&out_bs).arg(&scale);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_attention"))?;
        Ok(())
    }
}
