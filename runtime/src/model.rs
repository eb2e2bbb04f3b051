//! Builds the static op graphs of the decoder (`post_quant_conv` + `Decoder`) and the diffusion
//! UNet from a weight store, with MONAI Generative 0.2.3 semantics (docs/architecture.md): weights are
//! packed once here, GroupNorm(+SiLU) is fused into the next convolution, upsampling into the
//! convolution after it, and the time-embedding projection into conv1's bias.

use crate::conv::ConvGeom;
use crate::error::RuntimeError;
use crate::gemm::PackedA;
use crate::graph::{Bias, BufId, Graph, InitKind, Op};
use crate::weights::WeightSource;
use ldm_weights::{DecoderConfig, UnetConfig};

/// Packed convolution weights and plain vectors (biases, norms, linear layers).
#[derive(Debug, Default)]
pub struct Params {
    pub convs: Vec<PackedA>,
    pub vecs: Vec<Vec<f32>>,
}

impl Params {
    pub fn bytes(&self) -> usize {
        self.convs.iter().map(|c| c.bytes()).sum::<usize>() + self.vecs.iter().map(|v| v.len() * 4).sum::<usize>()
    }
}

/// A value in the graph: buffer plus shape `[c, d, h, w]`.
#[derive(Debug, Clone, Copy)]
pub struct Tensor {
    pub buf: BufId,
    pub c: usize,
    pub d: usize,
    pub h: usize,
    pub w: usize,
}

impl Tensor {
    pub fn p(&self) -> usize {
        self.d * self.h * self.w
    }
    pub fn len(&self) -> usize {
        self.c * self.p()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One ResnetBlock's time-embedding projection, evaluated once per step into a dynamic bias.
#[derive(Debug, Clone, Copy)]
pub struct TembSlot {
    pub conv_bias: usize,
    pub proj_w: usize,
    pub proj_b: usize,
    pub cout: usize,
}

struct Builder<'a> {
    store: &'a dyn WeightSource,
    prefix: &'static str,
    params: &'a mut Params,
    g: Graph,
    groups: usize,
    eps: f32,
    slab_bytes: usize,
    slots: Vec<TembSlot>,
}

fn checked(v: &[usize]) -> Result<usize, RuntimeError> {
    v.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or(RuntimeError::Overflow("tensor size"))
}

impl<'a> Builder<'a> {
    /// An empty graph over the weights under `prefix`; GroupNorm uses `groups` (non-zero) and `eps`.
    fn new(
        store: &'a dyn WeightSource,
        prefix: &'static str,
        params: &'a mut Params,
        groups: u32,
        eps: f32,
        slab_bytes: usize,
    ) -> Result<Self, RuntimeError> {
        if groups == 0 {
            return Err(RuntimeError::InvalidConfig("norm_num_groups is 0".into()));
        }
        Ok(Builder { store, prefix, params, g: Graph::default(), groups: groups as usize, eps, slab_bytes, slots: Vec::new() })
    }

    fn vec(&mut self, name: &str, shape: &[usize]) -> Result<usize, RuntimeError> {
        let full = format!("{}{}", self.prefix, name);
        let d = self.store.tensor(&full, shape)?;
        self.params.vecs.push(d.into_owned());
        Ok(self.params.vecs.len() - 1)
    }

    fn matrix(&mut self, name: &str, shape: &[usize], m: usize, k: usize) -> Result<usize, RuntimeError> {
        let full = format!("{}{}", self.prefix, name);
        let d = self.store.tensor(&full, shape)?;
        self.params.convs.push(PackedA::pack(&d, m, k));
        Ok(self.params.convs.len() - 1)
    }

    fn new_tensor(&mut self, c: usize, d: usize, h: usize, w: usize) -> Result<Tensor, RuntimeError> {
        let len = checked(&[c, d, h, w])?;
        Ok(Tensor { buf: self.g.buf(len), c, d, h, w })
    }

    fn stats(&mut self, name: &str, x: &Tensor) -> Result<BufId, RuntimeError> {
        if !x.c.is_multiple_of(self.groups) {
            return Err(RuntimeError::InvalidConfig(format!(
                "{}{name}: {} channels are not divisible by {} groups",
                self.prefix, x.c, self.groups
            )));
        }
        let gamma = self.vec(&format!("{name}.weight"), &[x.c])?;
        let beta = self.vec(&format!("{name}.bias"), &[x.c])?;
        let out = self.g.buf(2 * x.c);
        self.g.push(Op::Stats { x: x.buf, c: x.c, p: x.p(), groups: self.groups, eps: self.eps, gamma, beta, out });
        Ok(out)
    }

    /// A convolution whose weights are `matrix` (index) and bias `bias`.
    #[allow(clippy::too_many_arguments)]
    fn conv_raw(
        &mut self,
        x: &Tensor,
        w: usize,
        bias: Bias,
        cout: usize,
        k: usize,
        stride: usize,
        up: bool,
        norm: Option<(BufId, bool)>,
        init: InitKind,
        out: Option<BufId>,
    ) -> Result<Tensor, RuntimeError> {
        let pad = k / 2;
        let g = ConvGeom { cin: x.c, din: x.d, hin: x.h, win: x.w, up: up as u32, k, stride, pad, cout };
        let o = g.out_dims();
        let t = match out {
            Some(buf) => Tensor { buf, c: cout, d: o[0], h: o[1], w: o[2] },
            None => self.new_tensor(cout, o[0], o[1], o[2])?,
        };
        let staged = out == Some(x.buf);
        if staged && (k != 1 || cout > x.c || norm.is_some()) {
            return Err(RuntimeError::InvalidConfig("in-place convolution must be 1x1 and must not widen".into()));
        }
        let mut slab = o[0];
        if norm.is_some() || staged {
            if stride != 1 || up {
                return Err(RuntimeError::InvalidConfig("normalised input needs a stride-1 convolution".into()));
            }
            let plane = checked(&[x.c, x.h, x.w, 4])?;
            let fit = (self.slab_bytes / plane.max(1)).saturating_sub(2 * pad).max(1);
            slab = fit.min(o[0]);
            let planes = (slab + 2 * pad).min(x.d);
            self.g.norm_ws = self.g.norm_ws.max(checked(&[x.c, planes, x.h, x.w])?);
        }
        self.g.flops += g.flops();
        self.g.push(Op::Conv { g, w, bias, x: x.buf, norm, staged, slab, out: t.buf, init });
        Ok(t)
    }

    /// Convolution `name.weight`/`name.bias` (`[cout, cin, k, k, k]`).
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: &Tensor,
        cout: usize,
        k: usize,
        stride: usize,
        up: bool,
        norm: Option<(BufId, bool)>,
        init: InitKind,
        out: Option<BufId>,
    ) -> Result<Tensor, RuntimeError> {
        let w = self.matrix(&format!("{name}.weight"), &[cout, x.c, k, k, k], cout, x.c * k * k * k)?;
        let b = self.vec(&format!("{name}.bias"), &[cout])?;
        self.conv_raw(x, w, Bias::Param(b), cout, k, stride, up, norm, init, out)
    }

    fn finish_planes(&self, n: usize) -> Result<(), RuntimeError> {
        if n == 0 {
            return Err(RuntimeError::InvalidConfig("empty volume".into()));
        }
        Ok(())
    }
}

/// The decoder's graph: input `[L, d, h, w]` latent (already divided by the scale factor),
/// output `[out, d * 2^(levels-1), ...]` image.
pub struct DecoderModel {
    pub graph: Graph,
    pub input: Tensor,
    pub output: Tensor,
}

fn dec_res(b: &mut Builder, pre: &str, x: Tensor, cout: usize) -> Result<Tensor, RuntimeError> {
    let s1 = b.stats(&format!("{pre}.norm1"), &x)?;
    let h = b.conv(&format!("{pre}.conv1.conv"), &x, cout, 3, 1, false, Some((s1, true)), InitKind::Bias, None)?;
    // The shortcut overwrites x in place when it narrows (the decoder always narrows), so the
    // block never holds x, h and the shortcut at once.
    let short = if x.c != cout {
        let into = if cout < x.c { Some(x.buf) } else { None };
        Some(b.conv(&format!("{pre}.nin_shortcut.conv"), &x, cout, 1, 1, false, None, InitKind::Bias, into)?)
    } else {
        None
    };
    let s2 = b.stats(&format!("{pre}.norm2"), &h)?;
    // out = shortcut(x) + conv2(...): accumulate into the shortcut, or into x itself (dead after).
    let target = short.map(|s| s.buf).unwrap_or(x.buf);
    b.conv(&format!("{pre}.conv2.conv"), &h, cout, 3, 1, false, Some((s2, true)), InitKind::Accumulate, Some(target))
}

pub fn build_decoder(
    cfg: &DecoderConfig,
    store: &dyn WeightSource,
    latent: [usize; 4],
    params: &mut Params,
    slab_bytes: usize,
) -> Result<DecoderModel, RuntimeError> {
    let levels = cfg.num_channels.len();
    if levels == 0 || cfg.num_res_blocks.len() != levels {
        return Err(RuntimeError::InvalidConfig("decoder: num_channels and num_res_blocks must have the same non-zero length".into()));
    }
    if latent[0] != cfg.latent_channels as usize {
        return Err(RuntimeError::InvalidOption(format!(
            "latent has {} channels, the decoder expects {}",
            latent[0], cfg.latent_channels
        )));
    }
    let mut b = Builder::new(store, "autoencoder.", params, cfg.norm_num_groups, cfg.norm_eps, slab_bytes)?;
    b.finish_planes(latent[1] * latent[2] * latent[3])?;
    let z = b.new_tensor(latent[0], latent[1], latent[2], latent[3])?;
    b.g.inputs.push(z.buf);
    let l = latent[0];
    let mut t = b.conv("post_quant_conv.conv", &z, l, 1, 1, false, None, InitKind::Bias, None)?;
    let rev_ch: Vec<usize> = cfg.num_channels.iter().rev().map(|&c| c as usize).collect();
    let rev_nrb: Vec<usize> = cfg.num_res_blocks.iter().rev().map(|&c| c as usize).collect();
    t = b.conv("decoder.blocks.0.conv", &t, rev_ch[0], 3, 1, false, None, InitKind::Bias, None)?;
    let mut block = 1;
    for i in 0..levels {
        for _ in 0..rev_nrb[i] {
            t = dec_res(&mut b, &format!("decoder.blocks.{block}"), t, rev_ch[i])?;
            block += 1;
        }
        if i + 1 != levels {
            t = b.conv(&format!("decoder.blocks.{block}.conv.conv"), &t, t.c, 3, 1, true, None, InitKind::Bias, None)?;
            block += 1;
        }
    }
    let s = b.stats(&format!("decoder.blocks.{block}"), &t)?;
    block += 1;
    let out = b.conv(
        &format!("decoder.blocks.{block}.conv"),
        &t,
        cfg.out_channels as usize,
        3,
        1,
        false,
        Some((s, false)),
        InitKind::Bias,
        None,
    )?;
    b.g.outputs.push(out.buf);
    let mut graph = b.g;
    graph.plan()?;
    Ok(DecoderModel { graph, input: z, output: out })
}

/// The UNet's graph plus its time-embedding parameters.
pub struct UnetModel {
    pub graph: Graph,
    pub input: Tensor,
    pub output: Tensor,
    pub c0: usize,
    pub time_w1: usize,
    pub time_b1: usize,
    pub time_w2: usize,
    pub time_b2: usize,
    pub slots: Vec<TembSlot>,
}

fn unet_res(b: &mut Builder, pre: &str, x: Tensor, cout: usize, temb: usize) -> Result<Tensor, RuntimeError> {
    let s1 = b.stats(&format!("{pre}.norm1"), &x)?;
    let w1 = b.matrix(&format!("{pre}.conv1.conv.weight"), &[cout, x.c, 3, 3, 3], cout, x.c * 27)?;
    let conv_bias = b.vec(&format!("{pre}.conv1.conv.bias"), &[cout])?;
    let proj_w = b.vec(&format!("{pre}.time_emb_proj.weight"), &[cout, temb])?;
    let proj_b = b.vec(&format!("{pre}.time_emb_proj.bias"), &[cout])?;
    b.slots.push(TembSlot { conv_bias, proj_w, proj_b, cout });
    let slot = b.slots.len() - 1;
    let h = b.conv_raw(&x, w1, Bias::Dynamic(slot), cout, 3, 1, false, Some((s1, true)), InitKind::Bias, None)?;
    let s2 = b.stats(&format!("{pre}.norm2"), &h)?;
    if x.c != cout {
        let sc = b.conv(&format!("{pre}.skip_connection.conv"), &x, cout, 1, 1, false, None, InitKind::Bias, None)?;
        b.conv(&format!("{pre}.conv2.conv"), &h, cout, 3, 1, false, Some((s2, true)), InitKind::Accumulate, Some(sc.buf))
    } else {
        b.conv(&format!("{pre}.conv2.conv"), &h, cout, 3, 1, false, Some((s2, true)), InitKind::Residual(x.buf), None)
    }
}

fn unet_attn(b: &mut Builder, pre: &str, x: Tensor, dh: usize, proj: bool) -> Result<Tensor, RuntimeError> {
    let c = x.c;
    if dh == 0 || !c.is_multiple_of(dh) {
        return Err(RuntimeError::InvalidConfig(format!("{pre}: {c} channels are not a multiple of head channels {dh}")));
    }
    let s = b.stats(&format!("{pre}.norm"), &x)?;
    let mut wqkv = Vec::with_capacity(3 * c * c);
    let mut bqkv = Vec::with_capacity(3 * c);
    for part in ["to_q", "to_k", "to_v"] {
        let full = format!("{}{pre}.{part}.weight", b.prefix);
        wqkv.extend_from_slice(&b.store.tensor(&full, &[c, c])?);
        let full = format!("{}{pre}.{part}.bias", b.prefix);
        bqkv.extend_from_slice(&b.store.tensor(&full, &[c])?);
    }
    b.params.convs.push(PackedA::pack(&wqkv, 3 * c, c));
    let w = b.params.convs.len() - 1;
    b.params.vecs.push(bqkv);
    let bias = b.params.vecs.len() - 1;
    let qkv = b.conv_raw(&x, w, Bias::Param(bias), 3 * c, 1, 1, false, Some((s, false)), InitKind::Bias, None)?;
    let n = x.p();
    b.g.flops += 4.0 * (n as f64) * (n as f64) * c as f64;
    if proj {
        let a = b.new_tensor(c, x.d, x.h, x.w)?;
        b.g.push(Op::Attn { qkv: qkv.buf, res: None, c, n, dh, out: a.buf });
        let pw = b.matrix(&format!("{pre}.proj_attn.weight"), &[c, c], c, c)?;
        let pb = b.vec(&format!("{pre}.proj_attn.bias"), &[c])?;
        b.conv_raw(&a, pw, Bias::Param(pb), c, 1, 1, false, None, InitKind::Residual(x.buf), None)
    } else {
        let out = b.new_tensor(c, x.d, x.h, x.w)?;
        b.g.push(Op::Attn { qkv: qkv.buf, res: Some(x.buf), c, n, dh, out: out.buf });
        Ok(out)
    }
}

pub fn build_unet(
    cfg: &UnetConfig,
    store: &dyn WeightSource,
    latent: [usize; 4],
    params: &mut Params,
    slab_bytes: usize,
) -> Result<UnetModel, RuntimeError> {
    let levels = cfg.num_channels.len();
    if levels == 0
        || cfg.attention_levels.len() != levels
        || cfg.num_head_channels.len() != levels
        || cfg.num_res_blocks.len() != levels
    {
        return Err(RuntimeError::InvalidConfig("unet: per-level lists must have the same non-zero length".into()));
    }
    if latent[0] != cfg.in_channels as usize {
        return Err(RuntimeError::InvalidOption(format!(
            "latent has {} channels, the UNet expects {}",
            latent[0], cfg.in_channels
        )));
    }
    let div = 1usize << (levels - 1);
    if latent[1..].iter().any(|&s| s == 0 || s % div != 0) {
        return Err(RuntimeError::InvalidOption(format!(
            "latent spatial dims {:?} must be non-zero multiples of {div}",
            &latent[1..]
        )));
    }
    let ch: Vec<usize> = cfg.num_channels.iter().map(|&c| c as usize).collect();
    let c0 = ch[0];
    if !c0.is_multiple_of(2) {
        return Err(RuntimeError::InvalidConfig("unet: num_channels[0] must be even".into()));
    }
    let temb = 4 * c0;
    let mut b = Builder::new(store, "unet.", params, cfg.norm_num_groups, cfg.norm_eps, slab_bytes)?;
    let time_w1 = b.vec("time_embed.0.weight", &[temb, c0])?;
    let time_b1 = b.vec("time_embed.0.bias", &[temb])?;
    let time_w2 = b.vec("time_embed.2.weight", &[temb, temb])?;
    let time_b2 = b.vec("time_embed.2.bias", &[temb])?;
    let x = b.new_tensor(latent[0], latent[1], latent[2], latent[3])?;
    b.g.inputs.push(x.buf);
    let proj = cfg.attention_output_projection;
    let mut h = b.conv("conv_in.conv", &x, c0, 3, 1, false, None, InitKind::Bias, None)?;
    let mut skips = vec![h];
    for i in 0..levels {
        for j in 0..cfg.num_res_blocks[i] as usize {
            h = unet_res(&mut b, &format!("down_blocks.{i}.resnets.{j}"), h, ch[i], temb)?;
            if cfg.attention_levels[i] {
                h = unet_attn(&mut b, &format!("down_blocks.{i}.attentions.{j}"), h, cfg.num_head_channels[i] as usize, proj)?;
            }
            skips.push(h);
        }
        if i + 1 != levels {
            h = b.conv(&format!("down_blocks.{i}.downsampler.op.conv"), &h, ch[i], 3, 2, false, None, InitKind::Bias, None)?;
            skips.push(h);
        }
    }
    let last = levels - 1;
    h = unet_res(&mut b, "middle_block.resnet_1", h, ch[last], temb)?;
    h = unet_attn(&mut b, "middle_block.attention", h, cfg.num_head_channels[last] as usize, proj)?;
    h = unet_res(&mut b, "middle_block.resnet_2", h, ch[last], temb)?;
    for i in 0..levels {
        let lvl = levels - 1 - i;
        for j in 0..cfg.num_res_blocks[lvl] as usize + 1 {
            let skip = skips.pop().ok_or_else(|| RuntimeError::InvalidConfig("unet: skip stack underflow".into()))?;
            let cat = b.new_tensor(h.c + skip.c, h.d, h.h, h.w)?;
            b.g.push(Op::Concat { a: h.buf, b: skip.buf, out: cat.buf });
            h = unet_res(&mut b, &format!("up_blocks.{i}.resnets.{j}"), cat, ch[lvl], temb)?;
            if cfg.attention_levels[lvl] {
                h = unet_attn(&mut b, &format!("up_blocks.{i}.attentions.{j}"), h, cfg.num_head_channels[lvl] as usize, proj)?;
            }
        }
        if i + 1 != levels {
            h = b.conv(&format!("up_blocks.{i}.upsampler.conv.conv"), &h, h.c, 3, 1, true, None, InitKind::Bias, None)?;
        }
    }
    let s = b.stats("out.0", &h)?;
    let out = b.conv("out.2.conv", &h, cfg.out_channels as usize, 3, 1, false, Some((s, true)), InitKind::Bias, None)?;
    b.g.outputs.push(out.buf);
    let slots = std::mem::take(&mut b.slots);
    let mut graph = b.g;
    graph.plan()?;
    Ok(UnetModel { graph, input: x, output: out, c0, time_w1, time_b1, time_w2, time_b2, slots })
}
