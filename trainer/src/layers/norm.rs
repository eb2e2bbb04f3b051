//! Group normalisation (biased variance per (sample, group), optional per-channel affine).
//! Instance normalisation is the special case groups == channels; the discriminator's
//! `InstanceNorm3d` is that with no affine and eps 1e-5. Statistics are accumulated in f64.

use rayon::prelude::*;

use super::{check_len, Dims, LayerError};
use crate::params::{Param, ParamError, ParamStore};

#[derive(Debug, Clone, PartialEq)]
pub struct GroupNorm {
    pub channels: usize,
    pub groups: usize,
    pub eps: f32,
    /// `(gamma, beta)`, each `[channels]`; `None` for a non-affine norm.
    pub affine: Option<(Param, Param)>,
}

/// Per (sample, group) statistics saved by the forward for the backward.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NormStats {
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
}

impl GroupNorm {
    /// An affine GroupNorm registering `{prefix}.weight` and `{prefix}.bias`.
    pub fn new(store: &mut ParamStore, prefix: &str, channels: usize, groups: usize, eps: f32) -> Result<Self, ParamError> {
        let gamma = store.add(&format!("{prefix}.weight"), &[channels])?;
        let beta = store.add(&format!("{prefix}.bias"), &[channels])?;
        Ok(GroupNorm { channels, groups, eps, affine: Some((gamma, beta)) })
    }

    /// A parameter-free instance norm (groups == channels).
    pub fn instance(channels: usize, eps: f32) -> Self {
        GroupNorm { channels, groups: channels, eps, affine: None }
    }

    fn check(&self, x: &[f32], xd: Dims) -> Result<(), LayerError> {
        if xd.c != self.channels {
            return Err(LayerError::Channels { layer: "group_norm", expected: self.channels, found: xd.c });
        }
        if self.channels.checked_rem(self.groups) != Some(0) {
            return Err(LayerError::Config {
                layer: "group_norm",
                msg: format!("{} channels are not divisible into {} groups", self.channels, self.groups),
            });
        }
        check_len("group_norm", "input", x.len(), xd.numel())
    }

    pub fn forward(&self, p: &[f32], x: &[f32], xd: Dims) -> Result<(Vec<f32>, NormStats), LayerError> {
        self.check(x, xd)?;
        let cpg = self.channels / self.groups;
        let s = xd.spatial();
        let chunk = cpg * s;
        let mut y = vec![0.0f32; x.len()];
        let affine = self.affine.map(|(g, b)| (g.of(p), b.of(p)));
        let stats: Vec<(f32, f32)> = y
            .par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .enumerate()
            .map(|(idx, (yc, xc))| {
                let cnt = chunk as f64;
                let mean = xc.iter().map(|&v| v as f64).sum::<f64>() / cnt;
                let var = xc.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cnt;
                let rstd = 1.0 / (var + self.eps as f64).sqrt();
                let g0 = (idx % self.groups) * cpg;
                for c in 0..cpg {
                    let (ga, be) = match affine {
                        Some((ga, be)) => (ga[g0 + c] as f64, be[g0 + c] as f64),
                        None => (1.0, 0.0),
                    };
                    for i in c * s..(c + 1) * s {
                        yc[i] = (((xc[i] as f64 - mean) * rstd) * ga + be) as f32;
                    }
                }
                (mean as f32, rstd as f32)
            })
            .collect();
        let (mean, rstd) = stats.into_iter().unzip();
        Ok((y, NormStats { mean, rstd }))
    }

    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        x: &[f32],
        xd: Dims,
        stats: &NormStats,
        dy: &[f32],
    ) -> Result<Vec<f32>, LayerError> {
        self.check(x, xd)?;
        check_len("group_norm", "output gradient", dy.len(), xd.numel())?;
        check_len("group_norm", "statistics", stats.mean.len().min(stats.rstd.len()), xd.n * self.groups)?;
        let cpg = self.channels / self.groups;
        let s = xd.spatial();
        let chunk = cpg * s;
        let gamma = self.affine.map(|(ga, _)| ga.of(p));
        let mut dx = vec![0.0f32; x.len()];
        // Per (sample, group): the partial sums of dgamma and dbeta for its channels.
        let partial: Vec<Vec<(f64, f64)>> = dx
            .par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(dy.par_chunks(chunk)))
            .enumerate()
            .map(|(idx, (dxc, (xc, dyc)))| {
                let mean = stats.mean[idx] as f64;
                let rstd = stats.rstd[idx] as f64;
                let g0 = (idx % self.groups) * cpg;
                let mut sums = vec![(0.0f64, 0.0f64); cpg];
                let (mut s_dxh, mut s_dxh_xh) = (0.0f64, 0.0f64);
                for c in 0..cpg {
                    let ga = gamma.map_or(1.0, |ga| ga[g0 + c] as f64);
                    for i in c * s..(c + 1) * s {
                        let xh = (xc[i] as f64 - mean) * rstd;
                        let d = dyc[i] as f64;
                        sums[c].0 += d * xh;
                        sums[c].1 += d;
                        s_dxh += d * ga;
                        s_dxh_xh += d * ga * xh;
                    }
                }
                let cnt = chunk as f64;
                let (m1, m2) = (s_dxh / cnt, s_dxh_xh / cnt);
                for c in 0..cpg {
                    let ga = gamma.map_or(1.0, |ga| ga[g0 + c] as f64);
                    for i in c * s..(c + 1) * s {
                        let xh = (xc[i] as f64 - mean) * rstd;
                        dxc[i] = (rstd * (dyc[i] as f64 * ga - m1 - xh * m2)) as f32;
                    }
                }
                sums
            })
            .collect();
        if let Some((gp, bp)) = self.affine {
            let mut acc = vec![(0.0f64, 0.0f64); self.channels];
            for (idx, sums) in partial.iter().enumerate() {
                let g0 = (idx % self.groups) * cpg;
                for (c, &(dg, db)) in sums.iter().enumerate() {
                    acc[g0 + c].0 += dg;
                    acc[g0 + c].1 += db;
                }
            }
            for (c, &(dg, _)) in acc.iter().enumerate() {
                gp.of_mut(g)[c] += dg as f32;
            }
            for (c, &(_, db)) in acc.iter().enumerate() {
                bp.of_mut(g)[c] += db as f32;
            }
        }
        Ok(dx)
    }
}
