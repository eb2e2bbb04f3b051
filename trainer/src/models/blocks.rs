//! Composite blocks: the residual block shared by the autoencoder (`ResBlock`) and the UNet
//! (`ResnetBlock`, with a time-embedding projection), and the UNet's attention block
//! (`x + attn(GroupNorm(x))`). Each saves its own activations in a cache struct.

use crate::layers::act::{silu_backward, silu_forward};
use crate::layers::attention::{Attention, AttentionCache};
use crate::layers::conv3d::Conv3d;
use crate::layers::linear::Linear;
use crate::layers::norm::{GroupNorm, NormStats};
use crate::layers::{check_len, Dims, LayerError};
use crate::params::{ParamError, ParamStore};

/// `out = shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))) [+ time_proj(semb)])))`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResBlock {
    pub cin: usize,
    pub cout: usize,
    pub norm1: GroupNorm,
    pub conv1: Conv3d,
    /// UNet only: Linear(temb_dim, cout) applied to SiLU(emb), added after conv1.
    pub time_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv3d,
    /// 1x1 conv when channels change.
    pub shortcut: Option<Conv3d>,
}

/// Activations saved by [`ResBlock::forward`].
#[derive(Debug, Clone, Default)]
pub struct ResCache {
    x: Vec<f32>,
    xd: Option<Dims>,
    st1: NormStats,
    a1: Vec<f32>,
    s1: Vec<f32>,
    h1: Vec<f32>,
    hd: Option<Dims>,
    st2: NormStats,
    a2: Vec<f32>,
    s2: Vec<f32>,
}

impl ResBlock {
    /// `shortcut_name`: `nin_shortcut` (autoencoder) or `skip_connection` (UNet).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        cin: usize,
        cout: usize,
        groups: usize,
        eps: f32,
        temb_dim: Option<usize>,
        shortcut_name: &str,
    ) -> Result<Self, ParamError> {
        let norm1 = GroupNorm::new(store, &format!("{prefix}.norm1"), cin, groups, eps)?;
        let conv1 = Conv3d::new(store, &format!("{prefix}.conv1.conv"), cin, cout, 3, 1, 1, true)?;
        let time_proj = match temb_dim {
            Some(t) => Some(Linear::new(store, &format!("{prefix}.time_emb_proj"), t, cout, true)?),
            None => None,
        };
        let norm2 = GroupNorm::new(store, &format!("{prefix}.norm2"), cout, groups, eps)?;
        let conv2 = Conv3d::new(store, &format!("{prefix}.conv2.conv"), cout, cout, 3, 1, 1, true)?;
        let shortcut = if cin != cout {
            Some(Conv3d::new(store, &format!("{prefix}.{shortcut_name}.conv"), cin, cout, 1, 1, 0, true)?)
        } else {
            None
        };
        Ok(ResBlock { cin, cout, norm1, conv1, time_proj, norm2, conv2, shortcut })
    }

    /// `semb` is SiLU(emb) `[N, temb_dim]` for UNet blocks, `None` for autoencoder blocks.
    /// With `keep == false` nothing is saved (inference).
    pub fn forward(
        &self,
        p: &[f32],
        x: &[f32],
        xd: Dims,
        semb: Option<&[f32]>,
        keep: bool,
    ) -> Result<(Vec<f32>, Dims, ResCache), LayerError> {
        let (a1, st1) = self.norm1.forward(p, x, xd)?;
        let s1 = silu_forward(&a1);
        let (mut h1, hd) = self.conv1.forward(p, &s1, xd)?;
        if let Some(tp) = &self.time_proj {
            let semb = semb.ok_or(LayerError::Config { layer: "res_block", msg: "time embedding required".into() })?;
            let t = tp.forward(p, semb, xd.n)?;
            let s = hd.spatial();
            // t is [N, cout]; h1 is [N, cout, S]: one value per (sample, channel).
            for (ch, &v) in h1.chunks_mut(s).zip(&t) {
                ch.iter_mut().for_each(|h| *h += v);
            }
        }
        let (a2, st2) = self.norm2.forward(p, &h1, hd)?;
        let s2 = silu_forward(&a2);
        let (mut y, yd) = self.conv2.forward(p, &s2, hd)?;
        match &self.shortcut {
            Some(sc) => {
                let (r, _) = sc.forward(p, x, xd)?;
                y.iter_mut().zip(&r).for_each(|(a, b)| *a += b);
            }
            None => y.iter_mut().zip(x).for_each(|(a, b)| *a += b),
        }
        let cache = if keep {
            ResCache { x: x.to_vec(), xd: Some(xd), st1, a1, s1, h1, hd: Some(hd), st2, a2, s2 }
        } else {
            ResCache::default()
        };
        Ok((y, yd, cache))
    }

    /// Returns dx; accumulates parameter gradients and, for UNet blocks, d(SiLU(emb)) into `dsemb`.
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        c: &ResCache,
        dy: &[f32],
        semb: Option<&[f32]>,
        dsemb: Option<&mut [f32]>,
    ) -> Result<Vec<f32>, LayerError> {
        let missing = || LayerError::Config { layer: "res_block", msg: "backward without a saved forward".into() };
        let (xd, hd) = (c.xd.ok_or_else(missing)?, c.hd.ok_or_else(missing)?);
        check_len("res_block", "output gradient", dy.len(), hd.numel())?;
        let ds2 = self.conv2.backward(p, g, &c.s2, hd, dy)?;
        let da2 = silu_backward(&c.a2, &ds2)?;
        let dh1 = self.norm2.backward(p, g, &c.h1, hd, &c.st2, &da2)?;
        if let Some(tp) = &self.time_proj {
            let (semb, dsemb) = match (semb, dsemb) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(LayerError::Config { layer: "res_block", msg: "time embedding required".into() }),
            };
            let s = hd.spatial();
            let dt: Vec<f32> = dh1.chunks(s).map(|ch| ch.iter().map(|&v| v as f64).sum::<f64>() as f32).collect();
            let d = tp.backward(p, g, semb, xd.n, &dt)?;
            check_len("res_block", "time embedding gradient", dsemb.len(), d.len())?;
            dsemb.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
        let ds1 = self.conv1.backward(p, g, &c.s1, xd, &dh1)?;
        let da1 = silu_backward(&c.a1, &ds1)?;
        let mut dx = self.norm1.backward(p, g, &c.x, xd, &c.st1, &da1)?;
        match &self.shortcut {
            Some(sc) => {
                let d = sc.backward(p, g, &c.x, xd, dy)?;
                dx.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
            }
            None => dx.iter_mut().zip(dy).for_each(|(a, b)| *a += b),
        }
        Ok(dx)
    }
}

/// `x + attention(GroupNorm(x))` (generative 0.2.3 `AttentionBlock`).
#[derive(Debug, Clone, PartialEq)]
pub struct AttnBlock {
    pub norm: GroupNorm,
    pub attn: Attention,
}

#[derive(Debug, Clone, Default)]
pub struct AttnBlockCache {
    x: Vec<f32>,
    xd: Option<Dims>,
    st: NormStats,
    attn: AttentionCache,
}

impl AttnBlock {
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        channels: usize,
        head_channels: usize,
        groups: usize,
        eps: f32,
        output_projection: bool,
    ) -> Result<Self, ParamError> {
        let norm = GroupNorm::new(store, &format!("{prefix}.norm"), channels, groups, eps)?;
        let attn = Attention::new(store, prefix, channels, head_channels, output_projection)?;
        Ok(AttnBlock { norm, attn })
    }

    pub fn forward(&self, p: &[f32], x: &[f32], xd: Dims, keep: bool) -> Result<(Vec<f32>, AttnBlockCache), LayerError> {
        let (n, st) = self.norm.forward(p, x, xd)?;
        let (mut y, attn) = self.attn.forward(p, &n, xd)?;
        y.iter_mut().zip(x).for_each(|(a, b)| *a += b);
        let cache = if keep { AttnBlockCache { x: x.to_vec(), xd: Some(xd), st, attn } } else { AttnBlockCache::default() };
        Ok((y, cache))
    }

    pub fn backward(&self, p: &[f32], g: &mut [f32], c: &AttnBlockCache, dy: &[f32]) -> Result<Vec<f32>, LayerError> {
        let xd = c.xd.ok_or(LayerError::Config { layer: "attention_block", msg: "backward without a saved forward".into() })?;
        let dn = self.attn.backward(p, g, xd, &c.attn, dy)?;
        let mut dx = self.norm.backward(p, g, &c.x, xd, &c.st, &dn)?;
        dx.iter_mut().zip(dy).for_each(|(a, b)| *a += b);
        Ok(dx)
    }
}
