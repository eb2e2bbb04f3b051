//! Multi-head self-attention over all voxels of a level (generative 0.2.3 `AttentionBlock` core,
//! without its GroupNorm and residual, which the model block owns).
//!
//! Tokens are the N = D*H*W voxels in row-major order; `to_q/to_k/to_v` are Linear(C, C) with
//! bias; head h uses channels `h*dh..(h+1)*dh`; scores are `scale * Q K^T` with
//! `scale = 1/sqrt(dh)`; `proj_attn` is applied only when configured (generative 0.2.3 never
//! applies it). The softmax probabilities (`[B, heads, N, N]`) are saved for the backward.

use super::gemm::sgemm_strided;
use super::linear::Linear;
use super::{check_len, Dims, LayerError};
use crate::params::{ParamError, ParamStore};

#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    pub channels: usize,
    pub heads: usize,
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub proj_attn: Option<Linear>,
}

/// Activations saved by [`Attention::forward`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttentionCache {
    /// Tokens `[B*N, C]`.
    pub xt: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Softmax probabilities `[B, heads, N, N]`.
    pub probs: Vec<f32>,
    /// Head outputs before `proj_attn`, `[B*N, C]` (kept only when the projection is applied).
    pub o: Vec<f32>,
}

/// `[B, C, S]` -> `[B, S, C]` (or back with the roles of `c` and `s` swapped).
#[allow(clippy::needless_range_loop)]
pub fn transpose_cs(x: &[f32], b: usize, c: usize, s: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for bi in 0..b {
        let xb = &x[bi * c * s..(bi + 1) * c * s];
        let yb = &mut y[bi * c * s..(bi + 1) * c * s];
        for ci in 0..c {
            for si in 0..s {
                yb[si * c + ci] = xb[ci * s + si];
            }
        }
    }
    y
}

impl Attention {
    /// Registers `{prefix}.to_q/to_k/to_v` (and `{prefix}.proj_attn` when `output_projection`).
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        channels: usize,
        head_channels: usize,
        output_projection: bool,
    ) -> Result<Self, ParamError> {
        let heads = if head_channels == 0 { 1 } else { (channels / head_channels).max(1) };
        let to_q = Linear::new(store, &format!("{prefix}.to_q"), channels, channels, true)?;
        let to_k = Linear::new(store, &format!("{prefix}.to_k"), channels, channels, true)?;
        let to_v = Linear::new(store, &format!("{prefix}.to_v"), channels, channels, true)?;
        let proj_attn = if output_projection {
            Some(Linear::new(store, &format!("{prefix}.proj_attn"), channels, channels, true)?)
        } else {
            None
        };
        Ok(Attention { channels, heads, to_q, to_k, to_v, proj_attn })
    }

    fn head_dim(&self) -> usize {
        self.channels / self.heads
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim() as f32).sqrt()
    }

    fn check(&self, xd: Dims) -> Result<(), LayerError> {
        if xd.c != self.channels {
            return Err(LayerError::Channels { layer: "attention", expected: self.channels, found: xd.c });
        }
        if self.heads == 0 || self.channels.checked_rem(self.heads) != Some(0) {
            return Err(LayerError::Config {
                layer: "attention",
                msg: format!("{} channels do not split into {} heads", self.channels, self.heads),
            });
        }
        Ok(())
    }

    /// `x` is the normalised input `[B, C, D, H, W]`; returns the attention output in the same
    /// layout (no residual).
    pub fn forward(&self, p: &[f32], x: &[f32], xd: Dims) -> Result<(Vec<f32>, AttentionCache), LayerError> {
        self.check(xd)?;
        check_len("attention", "input", x.len(), xd.numel())?;
        let (b, c, s) = (xd.n, xd.c, xd.spatial());
        let (nh, dh, scale) = (self.heads, self.head_dim(), self.scale());
        let xt = transpose_cs(x, b, c, s);
        let q = self.to_q.forward(p, &xt, b * s)?;
        let k = self.to_k.forward(p, &xt, b * s)?;
        let v = self.to_v.forward(p, &xt, b * s)?;
        let mut probs = vec![0.0f32; b * nh * s * s];
        let mut o = vec![0.0f32; b * s * c];
        for bi in 0..b {
            let tok = bi * s * c;
            for h in 0..nh {
                let pr = &mut probs[(bi * nh + h) * s * s..(bi * nh + h + 1) * s * s];
                let off = tok + h * dh;
                sgemm_strided(s, dh, s, scale, &q[off..], c, 1, &k[off..], 1, c, 0.0, pr, s, 1);
                for row in pr.chunks_mut(s) {
                    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0f32;
                    for v in row.iter_mut() {
                        *v = (*v - m).exp();
                        sum += *v;
                    }
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|v| *v *= inv);
                }
                sgemm_strided(s, s, dh, 1.0, pr, s, 1, &v[off..], c, 1, 0.0, &mut o[off..], c, 1);
            }
        }
        let (out_t, o_saved) = match &self.proj_attn {
            Some(pj) => (pj.forward(p, &o, b * s)?, o),
            None => (o, Vec::new()),
        };
        let y = transpose_cs(&out_t, b, s, c);
        Ok((y, AttentionCache { xt, q, k, v, probs, o: o_saved }))
    }

    /// Accumulates the parameter gradients and returns the gradient of the normalised input.
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        xd: Dims,
        cache: &AttentionCache,
        dy: &[f32],
    ) -> Result<Vec<f32>, LayerError> {
        self.check(xd)?;
        check_len("attention", "output gradient", dy.len(), xd.numel())?;
        let (b, c, s) = (xd.n, xd.c, xd.spatial());
        let (nh, dh, scale) = (self.heads, self.head_dim(), self.scale());
        check_len("attention", "saved probabilities", cache.probs.len(), b * nh * s * s)?;
        for t in [&cache.xt, &cache.q, &cache.k, &cache.v] {
            check_len("attention", "saved tokens", t.len(), b * s * c)?;
        }
        let dyt = transpose_cs(dy, b, c, s);
        let d_o = match &self.proj_attn {
            Some(pj) => pj.backward(p, g, &cache.o, b * s, &dyt)?,
            None => dyt,
        };
        let mut dq = vec![0.0f32; b * s * c];
        let mut dk = vec![0.0f32; b * s * c];
        let mut dv = vec![0.0f32; b * s * c];
        let mut dp = vec![0.0f32; s * s];
        for bi in 0..b {
            let tok = bi * s * c;
            for h in 0..nh {
                let pr = &cache.probs[(bi * nh + h) * s * s..(bi * nh + h + 1) * s * s];
                let off = tok + h * dh;
                // dP = dO V^T ; dV = P^T dO
                sgemm_strided(s, dh, s, 1.0, &d_o[off..], c, 1, &cache.v[off..], 1, c, 0.0, &mut dp, s, 1);
                sgemm_strided(s, s, dh, 1.0, pr, 1, s, &d_o[off..], c, 1, 0.0, &mut dv[off..], c, 1);
                // dScores = P * (dP - rowsum(dP * P))
                for (dprow, prow) in dp.chunks_mut(s).zip(pr.chunks(s)) {
                    let dot: f32 = dprow.iter().zip(prow).map(|(a, b)| a * b).sum();
                    dprow.iter_mut().zip(prow).for_each(|(d, &pv)| *d = pv * (*d - dot));
                }
                // dQ = scale dS K ; dK = scale dS^T Q
                sgemm_strided(s, s, dh, scale, &dp, s, 1, &cache.k[off..], c, 1, 0.0, &mut dq[off..], c, 1);
                sgemm_strided(s, s, dh, scale, &dp, 1, s, &cache.q[off..], c, 1, 0.0, &mut dk[off..], c, 1);
            }
        }
        let mut dxt = self.to_q.backward(p, g, &cache.xt, b * s, &dq)?;
        let dxk = self.to_k.backward(p, g, &cache.xt, b * s, &dk)?;
        let dxv = self.to_v.backward(p, g, &cache.xt, b * s, &dv)?;
        dxt.iter_mut().zip(dxk.iter().zip(&dxv)).for_each(|(a, (k, v))| *a += k + v);
        Ok(transpose_cs(&dxt, b, s, c))
    }
}
