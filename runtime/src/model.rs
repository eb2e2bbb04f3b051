//! Builds the backend-neutral graphs (`graph::Graph`) of the decoder (`post_quant_conv` +
//! `Decoder`) and the diffusion UNet from a weight store, walking the networks' one declaration
//! (`ldm_weights::network`), with MONAI Generative 0.2.3 semantics (docs/architecture.md):
//! GroupNorm(+SiLU) becomes the input stage of the convolution after it, upsampling part of the
//! convolution after it, the time-embedding projection a per-step bias of conv1, and residual
//! additions the convolution's initial value. Weights stay in the blob's layout; each backend
//! lowers the graph and its `Params` (`lower_cpu`, `cuda::lower`).

use std::borrow::Cow;

use crate::conv::ConvGeom;
use crate::error::RuntimeError;
use crate::graph::{Bias, BufId, Graph, InitKind, Op};
use crate::weights::WeightSource;
use ldm_weights::network::{self, Layer, NormSettings};
use ldm_weights::{DecoderConfig, UnetConfig};

/// The weights a graph's ops refer to by index, as the blob stores them: convolution (and fused
/// q/k/v) matrices, borrowed from the weight source where it holds them as they are (a backend
/// packs or uploads them without a copy), and plain vectors (biases, norms, linear layers).
#[derive(Debug, Default)]
pub struct Params<'w> {
    /// `[m, k]` row-major matrices, PyTorch layout (`[cout, cin * k^3]` for a convolution).
    pub matrices: Vec<Matrix<'w>>,
    pub vecs: Vec<Vec<f32>>,
}

/// An `[m, k]` row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<'w> {
    pub data: Cow<'w, [f32]>,
    pub m: usize,
    pub k: usize,
}

impl<'w> Params<'w> {
    /// Bytes of every parameter.
    pub fn bytes(&self) -> usize {
        self.matrices.iter().map(|m| m.data.len() * 4).sum::<usize>() + self.vecs.iter().map(|v| v.len() * 4).sum::<usize>()
    }

    /// Stores an `[m, k]` matrix; returns its index.
    fn push_matrix(&mut self, data: Cow<'w, [f32]>, m: usize, k: usize) -> usize {
        self.matrices.push(Matrix { data, m, k });
        self.matrices.len() - 1
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

struct Builder<'a, 'w> {
    store: &'w dyn WeightSource,
    params: &'a mut Params<'w>,
    g: Graph,
    groups: usize,
    eps: f32,
    slots: Vec<TembSlot>,
}

fn checked(v: &[usize]) -> Result<usize, RuntimeError> {
    v.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or(RuntimeError::Overflow("tensor size"))
}

impl<'a, 'w> Builder<'a, 'w> {
    /// An empty graph; GroupNorm uses `norm.groups` (non-zero) and `norm.eps`.
    fn new(
        store: &'w dyn WeightSource,
        params: &'a mut Params<'w>,
        norm: NormSettings,
    ) -> Result<Self, RuntimeError> {
        if norm.groups == 0 {
            return Err(RuntimeError::InvalidConfig("norm_num_groups is 0".into()));
        }
        Ok(Builder { store, params, g: Graph::default(), groups: norm.groups, eps: norm.eps, slots: Vec::new() })
    }

    fn vec(&mut self, name: &str, shape: &[usize]) -> Result<usize, RuntimeError> {
        let d = self.store.tensor(name, shape)?;
        self.params.vecs.push(d.into_owned());
        Ok(self.params.vecs.len() - 1)
    }

    fn matrix(&mut self, name: &str, shape: &[usize], m: usize, k: usize) -> Result<usize, RuntimeError> {
        let d = self.store.tensor(name, shape)?;
        Ok(self.params.push_matrix(d, m, k))
    }

    fn new_tensor(&mut self, c: usize, d: usize, h: usize, w: usize) -> Result<Tensor, RuntimeError> {
        let len = checked(&[c, d, h, w])?;
        Ok(Tensor { buf: self.g.buf(len), c, d, h, w })
    }

    fn stats(&mut self, name: &str, x: &Tensor) -> Result<BufId, RuntimeError> {
        if !x.c.is_multiple_of(self.groups) {
            return Err(RuntimeError::InvalidConfig(format!(
                "{name}: {} channels are not divisible by {} groups",
                x.c, self.groups
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
        let in_place = out == Some(x.buf);
        if in_place && (k != 1 || cout > x.c || norm.is_some()) {
            return Err(RuntimeError::InvalidConfig("in-place convolution must be 1x1 and must not widen".into()));
        }
        if (norm.is_some() || in_place) && (stride != 1 || up) {
            return Err(RuntimeError::InvalidConfig("normalised or in-place input needs a stride-1 convolution".into()));
        }
        self.g.flops += g.flops();
        self.g.push(Op::Conv { g, w, bias, x: x.buf, norm, out: t.buf, init });
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

    /// The MONAI `Convolution` `c` on `x` (its declared input width must be `x`'s).
    #[allow(clippy::too_many_arguments)]
    fn layer_conv(
        &mut self,
        c: &network::Conv,
        x: &Tensor,
        up: bool,
        norm: Option<(BufId, bool)>,
        init: InitKind,
        out: Option<BufId>,
    ) -> Result<Tensor, RuntimeError> {
        if c.cin != x.c {
            return Err(RuntimeError::InvalidConfig(format!("{}: declared for {} input channels, given {}", c.path, c.cin, x.c)));
        }
        if c.pad != (c.k / 2, c.k / 2) {
            return Err(RuntimeError::InvalidConfig(format!("{}: asymmetric padding is not supported here", c.path)));
        }
        self.conv(&format!("{}.conv", c.path), x, c.cout, c.k, c.stride, up, norm, init, out)
    }

    /// Walks `layers` from `x`: GroupNorm (+ SiLU) fuses into the convolution after it, skips
    /// are a stack of tensors, concatenation an op.
    fn layers(&mut self, layers: &[Layer], x: Tensor) -> Result<Tensor, RuntimeError> {
        let mut h = x;
        let mut skips: Vec<Tensor> = Vec::new();
        let mut i = 0;
        while i < layers.len() {
            match &layers[i] {
                Layer::Conv(c) => h = self.layer_conv(c, &h, false, None, InitKind::Bias, None)?,
                Layer::Upsample(c) => h = self.layer_conv(c, &h, true, None, InitKind::Bias, None)?,
                Layer::Norm { path, .. } => {
                    let silu = matches!(layers.get(i + 1), Some(Layer::Silu));
                    i += 1 + usize::from(silu);
                    let Some(Layer::Conv(c)) = layers.get(i) else {
                        return Err(RuntimeError::InvalidConfig(format!(
                            "{path}: a GroupNorm must be followed by a convolution"
                        )));
                    };
                    let s = self.stats(path, &h)?;
                    h = self.layer_conv(c, &h, false, Some((s, silu)), InitKind::Bias, None)?;
                }
                Layer::Silu => return Err(RuntimeError::InvalidConfig("a SiLU must follow a GroupNorm".into())),
                Layer::Res(r) => {
                    h = match r.temb {
                        Some(temb) => unet_res(self, r, h, temb)?,
                        None => dec_res(self, r, h)?,
                    }
                }
                Layer::Attn(a) => h = unet_attn(self, a, h)?,
                Layer::PushSkip => skips.push(h),
                Layer::PopConcat => {
                    let skip = skips.pop().ok_or_else(|| RuntimeError::InvalidConfig("skip stack underflow".into()))?;
                    let cat = self.new_tensor(h.c + skip.c, h.d, h.h, h.w)?;
                    self.g.push(Op::Concat { a: h.buf, b: skip.buf, out: cat.buf });
                    h = cat;
                }
            }
            i += 1;
        }
        if !skips.is_empty() {
            return Err(RuntimeError::InvalidConfig("skip connections left unused".into()));
        }
        Ok(h)
    }
}

/// The decoder's graph: input `[L, d, h, w]` latent (already divided by the scale factor),
/// output `[out, d * 2^(levels-1), ...]` image.
pub struct DecoderModel {
    pub graph: Graph,
    pub input: Tensor,
    pub output: Tensor,
}

fn dec_res(b: &mut Builder, r: &network::Res, x: Tensor) -> Result<Tensor, RuntimeError> {
    let s1 = b.stats(&format!("{}.norm1", r.path), &x)?;
    let h = b.layer_conv(&r.conv1(), &x, false, Some((s1, true)), InitKind::Bias, None)?;
    // The shortcut overwrites x in place when it narrows (the decoder always narrows), so the
    // block never holds x, h and the shortcut at once.
    let short = match r.shortcut() {
        Some(sc) => {
            let into = if sc.cout < x.c { Some(x.buf) } else { None };
            Some(b.layer_conv(&sc, &x, false, None, InitKind::Bias, into)?)
        }
        None => None,
    };
    let s2 = b.stats(&format!("{}.norm2", r.path), &h)?;
    // out = shortcut(x) + conv2(...): accumulate into the shortcut, or into x itself (dead after).
    let target = short.map(|s| s.buf).unwrap_or(x.buf);
    b.layer_conv(&r.conv2(), &h, false, Some((s2, true)), InitKind::Accumulate, Some(target))
}

pub fn build_decoder<'w>(
    cfg: &DecoderConfig,
    store: &'w dyn WeightSource,
    latent: [usize; 4],
    params: &mut Params<'w>,
) -> Result<DecoderModel, RuntimeError> {
    let levels = cfg.num_channels.len();
    if levels == 0 || cfg.num_res_blocks.len() != levels {
        return Err(RuntimeError::InvalidConfig(
            "decoder: num_channels and num_res_blocks must have the same non-zero length".into(),
        ));
    }
    if latent[0] != cfg.latent_channels as usize {
        return Err(RuntimeError::InvalidOption(format!(
            "latent has {} channels, the decoder expects {}",
            latent[0], cfg.latent_channels
        )));
    }
    let net = network::decoder(cfg);
    let mut b = Builder::new(store, params, net.norm)?;
    b.finish_planes(latent[1] * latent[2] * latent[3])?;
    let z = b.new_tensor(latent[0], latent[1], latent[2], latent[3])?;
    b.g.inputs.push(z.buf);
    let t = b.layer_conv(&net.post_quant_conv, &z, false, None, InitKind::Bias, None)?;
    let out = b.layers(&net.layers, t)?;
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

fn unet_res(b: &mut Builder, r: &network::Res, x: Tensor, temb: usize) -> Result<Tensor, RuntimeError> {
    let (pre, cout) = (&r.path, r.cout);
    if r.cin != x.c {
        return Err(RuntimeError::InvalidConfig(format!("{pre}: declared for {} input channels, given {}", r.cin, x.c)));
    }
    let s1 = b.stats(&format!("{pre}.norm1"), &x)?;
    let w1 = b.matrix(&format!("{pre}.conv1.conv.weight"), &[cout, x.c, 3, 3, 3], cout, x.c * 27)?;
    let conv_bias = b.vec(&format!("{pre}.conv1.conv.bias"), &[cout])?;
    let proj_w = b.vec(&format!("{pre}.time_emb_proj.weight"), &[cout, temb])?;
    let proj_b = b.vec(&format!("{pre}.time_emb_proj.bias"), &[cout])?;
    b.slots.push(TembSlot { conv_bias, proj_w, proj_b, cout });
    let slot = b.slots.len() - 1;
    let h = b.conv_raw(&x, w1, Bias::Dynamic(slot), cout, 3, 1, false, Some((s1, true)), InitKind::Bias, None)?;
    let s2 = b.stats(&format!("{pre}.norm2"), &h)?;
    match r.shortcut() {
        Some(sc) => {
            let sc = b.layer_conv(&sc, &x, false, None, InitKind::Bias, None)?;
            b.layer_conv(&r.conv2(), &h, false, Some((s2, true)), InitKind::Accumulate, Some(sc.buf))
        }
        None => b.layer_conv(&r.conv2(), &h, false, Some((s2, true)), InitKind::Residual(x.buf), None),
    }
}

fn unet_attn(b: &mut Builder, a: &network::Attn, x: Tensor) -> Result<Tensor, RuntimeError> {
    let (pre, dh) = (&a.path, a.head_channels);
    let c = x.c;
    if a.c != c {
        return Err(RuntimeError::InvalidConfig(format!("{pre}: declared for {} channels, given {c}", a.c)));
    }
    if dh == 0 || !c.is_multiple_of(dh) {
        return Err(RuntimeError::InvalidConfig(format!("{pre}: {c} channels are not a multiple of head channels {dh}")));
    }
    let s = b.stats(&format!("{pre}.norm"), &x)?;
    let linears = a.linears();
    let mut wqkv = Vec::with_capacity(3 * c * c);
    let mut bqkv = Vec::with_capacity(3 * c);
    for l in &linears[..3] {
        wqkv.extend_from_slice(&b.store.tensor(&format!("{}.weight", l.path), &[c, c])?);
        bqkv.extend_from_slice(&b.store.tensor(&format!("{}.bias", l.path), &[c])?);
    }
    let w = b.params.push_matrix(Cow::Owned(wqkv), 3 * c, c);
    b.params.vecs.push(bqkv);
    let bias = b.params.vecs.len() - 1;
    let qkv = b.conv_raw(&x, w, Bias::Param(bias), 3 * c, 1, 1, false, Some((s, false)), InitKind::Bias, None)?;
    let n = x.p();
    b.g.flops += 4.0 * (n as f64) * (n as f64) * c as f64;
    match linears.get(3) {
        Some(proj) => {
            let attended = b.new_tensor(c, x.d, x.h, x.w)?;
            b.g.push(Op::Attn { qkv: qkv.buf, res: None, c, n, dh, out: attended.buf });
            let pw = b.matrix(&format!("{}.weight", proj.path), &[c, c], c, c)?;
            let pb = b.vec(&format!("{}.bias", proj.path), &[c])?;
            b.conv_raw(&attended, pw, Bias::Param(pb), c, 1, 1, false, None, InitKind::Residual(x.buf), None)
        }
        None => {
            let out = b.new_tensor(c, x.d, x.h, x.w)?;
            b.g.push(Op::Attn { qkv: qkv.buf, res: Some(x.buf), c, n, dh, out: out.buf });
            Ok(out)
        }
    }
}

pub fn build_unet<'w>(
    cfg: &UnetConfig,
    store: &'w dyn WeightSource,
    latent: [usize; 4],
    params: &mut Params<'w>,
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
    let net = network::unet(cfg);
    let c0 = net.time_channels;
    if !c0.is_multiple_of(2) {
        return Err(RuntimeError::InvalidConfig("unet: num_channels[0] must be even".into()));
    }
    let mut b = Builder::new(store, params, net.norm)?;
    let [e0, e2] = &net.time_embed;
    let time_w1 = b.vec(&format!("{}.weight", e0.path), &[e0.cout, e0.cin])?;
    let time_b1 = b.vec(&format!("{}.bias", e0.path), &[e0.cout])?;
    let time_w2 = b.vec(&format!("{}.weight", e2.path), &[e2.cout, e2.cin])?;
    let time_b2 = b.vec(&format!("{}.bias", e2.path), &[e2.cout])?;
    let x = b.new_tensor(latent[0], latent[1], latent[2], latent[3])?;
    b.g.inputs.push(x.buf);
    let out = b.layers(&net.layers, x)?;
    b.g.outputs.push(out.buf);
    let slots = std::mem::take(&mut b.slots);
    let mut graph = b.g;
    graph.plan()?;
    Ok(UnetModel { graph, input: x, output: out, c0, time_w1, time_b1, time_w2, time_b2, slots })
}
