//! A network as a flat list of ops run in order, with a tape of saved activations for the
//! backward (which walks the ops in reverse). Skip connections (UNet) are explicit ops:
//! `PushSkip(i)` saves the current activation as skip `i`, `PopConcat(i)` replaces the current
//! activation `h` by `cat([h, skip_i])`; in the backward, each skip's gradient is added back where
//! it was pushed.

use crate::layers::act::{leaky_relu_backward, leaky_relu_forward, silu_backward, silu_forward};
use crate::layers::concat::{concat_backward, concat_forward};
use crate::layers::conv3d::Conv3d;
use crate::layers::norm::{GroupNorm, NormStats};
use crate::layers::upsample::{upsample2_backward, upsample2_forward};
use crate::layers::{Dims, LayerError};

use super::blocks::{AttnBlock, AttnBlockCache, ResBlock, ResCache};
use super::ModelError;
use crate::params::{ParamError, ParamStore};
use ldm_weights::network::{self, Layer, NormSettings};

#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Op {
    Conv(Conv3d),
    Res(ResBlock),
    Attn(AttnBlock),
    /// Nearest x2 upsampling followed by the conv.
    Upsample(Conv3d),
    Norm(GroupNorm),
    Silu,
    LeakyRelu(f32),
    PushSkip(usize),
    PopConcat(usize),
}

/// What one op saved for its backward.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
enum Saved {
    Input { x: Vec<f32>, xd: Dims },
    Res(Box<ResCache>),
    Attn(Box<AttnBlockCache>),
    Upsample { u: Vec<f32>, ud: Dims, xd: Dims },
    Norm { x: Vec<f32>, xd: Dims, st: NormStats },
    Marker,
    Concat { ca: usize, yd: Dims },
}

/// The saved activations of one forward pass.
#[derive(Debug, Clone, Default)]
pub struct Tape {
    saved: Vec<Saved>,
    skips: usize,
}

/// The ops of a declared network (`ldm_weights::network`), registering each layer's parameters
/// (zero-initialised) in `store` in forward order.
pub fn from_layers(store: &mut ParamStore, layers: &[Layer], norm: NormSettings) -> Result<Vec<Op>, ModelError> {
    let (groups, eps) = (norm.groups, norm.eps);
    let mut ops = Vec::with_capacity(layers.len());
    let mut pushed = 0usize;
    let mut stack: Vec<usize> = Vec::new();
    for layer in layers {
        ops.push(match layer {
            Layer::Conv(c) => Op::Conv(conv3d(store, c)?),
            Layer::Upsample(c) => Op::Upsample(conv3d(store, c)?),
            Layer::Norm { path, c } => Op::Norm(GroupNorm::new(store, path, *c, groups, eps)?),
            Layer::Silu => Op::Silu,
            Layer::Res(r) => Op::Res(ResBlock::new(store, &r.path, r.cin, r.cout, groups, eps, r.temb, r.shortcut_name())?),
            Layer::Attn(a) => Op::Attn(AttnBlock::new(store, &a.path, a.c, a.head_channels, groups, eps, a.proj)?),
            Layer::PushSkip => {
                stack.push(pushed);
                pushed += 1;
                Op::PushSkip(pushed - 1)
            }
            Layer::PopConcat => {
                let id = stack.pop().ok_or_else(|| ModelError::Config("skip stack exhausted (inconsistent num_res_blocks)".into()))?;
                Op::PopConcat(id)
            }
        });
    }
    if !stack.is_empty() {
        return Err(ModelError::Config("skip connections left unused".into()));
    }
    Ok(ops)
}

/// The `Conv3d` of a declared MONAI `Convolution` (`<path>.conv`), with its padding.
pub fn conv3d(store: &mut ParamStore, c: &network::Conv) -> Result<Conv3d, ParamError> {
    let conv = Conv3d::new(store, &format!("{}.conv", c.path), c.cin, c.cout, c.k, c.stride, c.pad.0, true)?;
    Ok(if c.pad.0 == c.pad.1 { conv } else { conv.with_padding(c.pad.0, c.pad.1) })
}

fn bad_tape() -> LayerError {
    LayerError::Config { layer: "program", msg: "tape does not match the program".into() }
}

/// Number of skip slots a program uses.
pub fn skip_slots(ops: &[Op]) -> usize {
    ops.iter().filter(|o| matches!(o, Op::PushSkip(_))).count()
}

/// Runs the ops on `x`; `semb` is SiLU(time embedding) for UNet res blocks. With `keep` the tape
/// holds everything the backward needs, otherwise it stays empty.
pub fn forward(ops: &[Op], p: &[f32], x: &[f32], xd: Dims, semb: Option<&[f32]>, keep: bool) -> Result<(Vec<f32>, Dims, Tape), LayerError> {
    let mut h = x.to_vec();
    let mut hd = xd;
    let nskips = skip_slots(ops);
    let mut skips: Vec<Option<(Vec<f32>, Dims)>> = vec![None; nskips];
    let mut saved = Vec::with_capacity(if keep { ops.len() } else { 0 });
    for op in ops {
        let s = match op {
            Op::Conv(c) => {
                let (y, yd) = c.forward(p, &h, hd)?;
                let s = Saved::Input { x: std::mem::replace(&mut h, y), xd: hd };
                hd = yd;
                s
            }
            Op::Res(r) => {
                let (y, yd, cache) = r.forward(p, &h, hd, semb, keep)?;
                h = y;
                hd = yd;
                Saved::Res(Box::new(cache))
            }
            Op::Attn(a) => {
                let (y, cache) = a.forward(p, &h, hd, keep)?;
                h = y;
                Saved::Attn(Box::new(cache))
            }
            Op::Upsample(c) => {
                let (u, ud) = upsample2_forward(&h, hd)?;
                let (y, yd) = c.forward(p, &u, ud)?;
                let s = Saved::Upsample { u, ud, xd: hd };
                h = y;
                hd = yd;
                s
            }
            Op::Norm(n) => {
                let (y, st) = n.forward(p, &h, hd)?;
                Saved::Norm { x: std::mem::replace(&mut h, y), xd: hd, st }
            }
            Op::Silu => {
                let y = silu_forward(&h);
                Saved::Input { x: std::mem::replace(&mut h, y), xd: hd }
            }
            Op::LeakyRelu(slope) => {
                let y = leaky_relu_forward(&h, *slope);
                Saved::Input { x: std::mem::replace(&mut h, y), xd: hd }
            }
            Op::PushSkip(i) => {
                let slot = skips.get_mut(*i).ok_or_else(bad_tape)?;
                *slot = Some((h.clone(), hd));
                Saved::Marker
            }
            Op::PopConcat(i) => {
                let (sk, sd) = skips.get_mut(*i).and_then(|s| s.take()).ok_or_else(bad_tape)?;
                let (y, yd) = concat_forward(&h, hd, &sk, sd)?;
                let s = Saved::Concat { ca: hd.c, yd };
                h = y;
                hd = yd;
                s
            }
        };
        if keep {
            saved.push(s);
        }
    }
    Ok((h, hd, Tape { saved, skips: nskips }))
}

/// Backward through the ops; returns dx. `dsemb` accumulates d(SiLU(emb)) for UNet programs.
pub fn backward(
    ops: &[Op],
    p: &[f32],
    g: &mut [f32],
    tape: &Tape,
    dy: &[f32],
    semb: Option<&[f32]>,
    mut dsemb: Option<&mut [f32]>,
) -> Result<Vec<f32>, LayerError> {
    if tape.saved.len() != ops.len() {
        return Err(bad_tape());
    }
    let mut dskips: Vec<Option<Vec<f32>>> = vec![None; tape.skips];
    let mut dh = dy.to_vec();
    for (op, s) in ops.iter().zip(&tape.saved).rev() {
        dh = match (op, s) {
            (Op::Conv(c), Saved::Input { x, xd }) => c.backward(p, g, x, *xd, &dh)?,
            (Op::Res(r), Saved::Res(cache)) => r.backward(p, g, cache, &dh, semb, dsemb.as_deref_mut())?,
            (Op::Attn(a), Saved::Attn(cache)) => a.backward(p, g, cache, &dh)?,
            (Op::Upsample(c), Saved::Upsample { u, ud, xd }) => {
                let du = c.backward(p, g, u, *ud, &dh)?;
                upsample2_backward(&du, *xd)?
            }
            (Op::Norm(n), Saved::Norm { x, xd, st }) => n.backward(p, g, x, *xd, st, &dh)?,
            (Op::Silu, Saved::Input { x, .. }) => silu_backward(x, &dh)?,
            (Op::LeakyRelu(slope), Saved::Input { x, .. }) => leaky_relu_backward(x, &dh, *slope)?,
            (Op::PushSkip(i), Saved::Marker) => {
                if let Some(ds) = dskips.get_mut(*i).and_then(|d| d.take()) {
                    if ds.len() != dh.len() {
                        return Err(bad_tape());
                    }
                    dh.iter_mut().zip(&ds).for_each(|(a, b)| *a += b);
                }
                dh
            }
            (Op::PopConcat(i), Saved::Concat { ca, yd }) => {
                let (da, db) = concat_backward(&dh, *yd, *ca)?;
                *dskips.get_mut(*i).ok_or_else(bad_tape)? = Some(db);
                da
            }
            _ => return Err(bad_tape()),
        };
    }
    Ok(dh)
}
