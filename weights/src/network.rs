//! Each network declared once: the autoencoder's encoder and decoder and the diffusion UNet as
//! lists of layers in forward order, with MONAI Generative 0.2.3's module paths and shapes. The
//! blob's tensor contract (`names`), the runtime's plan builder and the trainer's models all walk
//! these lists; none of them repeats the topology (levels, block numbering, skip bookkeeping).
//!
//! Paths are full blob names without the parameter suffix: a `Conv` at `unet.conv_in` owns
//! `unet.conv_in.conv.weight` and `unet.conv_in.conv.bias` (MONAI's `Convolution` wraps the
//! `Conv3d` as `.conv`). Call these on a config `ModelConfig::validate` accepts: they never panic,
//! but an unvalidated config can give meaningless lists.

use crate::config::{DecoderConfig, EncoderConfig, UnetConfig};

/// A MONAI `Convolution` (3-D, with bias, zero padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conv {
    /// Module path; the tensors are `<path>.conv.weight` `[cout, cin, k, k, k]` and `.conv.bias`.
    pub path: String,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    /// Zero padding before and after along each spatial axis: `(k/2, k/2)`, except the
    /// autoencoder's downsampler, which pads `(0, 1)` and convolves with stride 2.
    pub pad: (usize, usize),
}

/// A `torch.nn.Linear` with bias: `<path>.weight` `[cout, cin]`, `<path>.bias` `[cout]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linear {
    pub path: String,
    pub cin: usize,
    pub cout: usize,
}

/// A residual block: norm1 -> SiLU -> conv1 (+ time projection) -> norm2 -> SiLU -> conv2, plus
/// a 1x1 shortcut convolution when the channel count changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Res {
    pub path: String,
    pub cin: usize,
    pub cout: usize,
    /// The UNet's `time_emb_proj` input width (4 x C0); `None` in the autoencoder.
    pub temb: Option<usize>,
}

impl Res {
    /// The shortcut's module name: the autoencoder's `ResBlock` calls it `nin_shortcut`, the
    /// UNet's `ResnetBlock` `skip_connection`.
    pub fn shortcut_name(&self) -> &'static str {
        if self.temb.is_some() {
            "skip_connection"
        } else {
            "nin_shortcut"
        }
    }

    /// The shortcut convolution, when the block changes the channel count.
    pub fn shortcut(&self) -> Option<Conv> {
        (self.cin != self.cout).then(|| {
            conv(format!("{}.{}", self.path, self.shortcut_name()), self.cin, self.cout, 1, 1)
        })
    }

    pub fn conv1(&self) -> Conv {
        conv(format!("{}.conv1", self.path), self.cin, self.cout, 3, 1)
    }

    pub fn conv2(&self) -> Conv {
        conv(format!("{}.conv2", self.path), self.cout, self.cout, 3, 1)
    }

    pub fn time_emb_proj(&self) -> Option<Linear> {
        self.temb.map(|t| Linear {
            path: format!("{}.time_emb_proj", self.path),
            cin: t,
            cout: self.cout,
        })
    }
}

/// The UNet's `AttentionBlock`: GroupNorm, then single-layer multi-head self-attention over the
/// voxels (`to_q`, `to_k`, `to_v`), added to the input; `proj_attn` only when applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attn {
    pub path: String,
    pub c: usize,
    pub head_channels: usize,
    /// The output projection `proj_attn` is applied (and stored).
    pub proj: bool,
}

impl Attn {
    /// `to_q`, `to_k`, `to_v`, then `proj_attn` when applied: registration order.
    pub fn linears(&self) -> Vec<Linear> {
        let parts: &[&str] = if self.proj {
            &["to_q", "to_k", "to_v", "proj_attn"]
        } else {
            &["to_q", "to_k", "to_v"]
        };
        parts
            .iter()
            .map(|p| Linear { path: format!("{}.{p}", self.path), cin: self.c, cout: self.c })
            .collect()
    }
}

/// One step of a network's forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    Conv(Conv),
    /// Nearest-neighbour x2 upsampling, then the convolution.
    Upsample(Conv),
    /// GroupNorm over `c` channels: `<path>.weight`, `<path>.bias`.
    Norm {
        path: String,
        c: usize,
    },
    Silu,
    Res(Res),
    Attn(Attn),
    /// Save the current activation on the skip stack (UNet down path).
    PushSkip,
    /// Replace the current activation `h` by `cat([h, popped skip])` along channels.
    PopConcat,
}

/// GroupNorm settings shared by every norm of one network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormSettings {
    pub groups: usize,
    pub eps: f32,
}

/// `AutoencoderKL`'s encoder side: `encoder.blocks.*` in forward order, then the two 1x1 heads.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderNet {
    pub norm: NormSettings,
    pub layers: Vec<Layer>,
    pub quant_conv_mu: Conv,
    pub quant_conv_log_sigma: Conv,
}

/// `AutoencoderKL`'s decoder side: `post_quant_conv`, then `decoder.blocks.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderNet {
    pub norm: NormSettings,
    pub post_quant_conv: Conv,
    pub layers: Vec<Layer>,
}

/// `DiffusionModelUNet` (no conditioning): the time embedding MLP beside the layers, which
/// start at `conv_in` and end at the output convolution.
#[derive(Debug, Clone, PartialEq)]
pub struct UnetNet {
    pub norm: NormSettings,
    /// Sinusoidal embedding width (C0) and the two linears `time_embed.0` (C0 -> 4C0) and
    /// `time_embed.2` (4C0 -> 4C0), with SiLU between and after.
    pub time_channels: usize,
    pub time_embed: [Linear; 2],
    pub layers: Vec<Layer>,
}

fn u(x: u32) -> usize {
    x as usize
}

fn conv(path: String, cin: usize, cout: usize, k: usize, stride: usize) -> Conv {
    Conv { path, cin, cout, k, stride, pad: (k / 2, k / 2) }
}

fn norm(path: String, c: usize) -> Layer {
    Layer::Norm { path, c }
}

/// `autoencoder.encoder.*` + the heads: conv_in, per level ResBlocks then a stride-2
/// downsampler (padded after only) except at the deepest level, GroupNorm, conv_out (no
/// activation between them in generative 0.2.3).
pub fn encoder(cfg: &EncoderConfig) -> EncoderNet {
    let ch: Vec<usize> = cfg.num_channels.iter().map(|&c| u(c)).collect();
    let lat = u(cfg.latent_channels);
    let block = |i: usize| format!("autoencoder.encoder.blocks.{i}");
    let mut layers = Vec::new();
    let mut n = 0usize;
    let mut cur = ch.first().copied().unwrap_or(0);
    layers.push(Layer::Conv(conv(block(n), u(cfg.in_channels), cur, 3, 1)));
    n += 1;
    for (i, &c) in ch.iter().enumerate() {
        for _ in 0..cfg.num_res_blocks.get(i).copied().unwrap_or(0) {
            layers.push(Layer::Res(Res { path: block(n), cin: cur, cout: c, temb: None }));
            cur = c;
            n += 1;
        }
        if i + 1 != ch.len() {
            let mut down = conv(format!("{}.conv", block(n)), cur, cur, 3, 2);
            down.pad = (0, 1);
            layers.push(Layer::Conv(down));
            n += 1;
        }
    }
    layers.push(norm(block(n), cur));
    n += 1;
    layers.push(Layer::Conv(conv(block(n), cur, lat, 3, 1)));
    EncoderNet {
        norm: NormSettings { groups: u(cfg.norm_num_groups), eps: cfg.norm_eps },
        layers,
        quant_conv_mu: conv("autoencoder.quant_conv_mu".into(), lat, lat, 1, 1),
        quant_conv_log_sigma: conv("autoencoder.quant_conv_log_sigma".into(), lat, lat, 1, 1),
    }
}

/// `autoencoder.post_quant_conv` + `autoencoder.decoder.*`: conv_in to the deepest width, per
/// level (deepest first) ResBlocks then a nearest-x2 upsampler except at the shallowest level,
/// GroupNorm, conv_out (no activation between them).
pub fn decoder(cfg: &DecoderConfig) -> DecoderNet {
    let rev: Vec<usize> = cfg.num_channels.iter().rev().map(|&c| u(c)).collect();
    let rev_res: Vec<u32> = cfg.num_res_blocks.iter().rev().copied().collect();
    let lat = u(cfg.latent_channels);
    let block = |i: usize| format!("autoencoder.decoder.blocks.{i}");
    let mut layers = Vec::new();
    let mut n = 0usize;
    let mut cur = rev.first().copied().unwrap_or(0);
    layers.push(Layer::Conv(conv(block(n), lat, cur, 3, 1)));
    n += 1;
    for (i, &c) in rev.iter().enumerate() {
        for _ in 0..rev_res.get(i).copied().unwrap_or(0) {
            layers.push(Layer::Res(Res { path: block(n), cin: cur, cout: c, temb: None }));
            cur = c;
            n += 1;
        }
        if i + 1 != rev.len() {
            layers.push(Layer::Upsample(conv(format!("{}.conv", block(n)), cur, cur, 3, 1)));
            n += 1;
        }
    }
    layers.push(norm(block(n), cur));
    n += 1;
    layers.push(Layer::Conv(conv(block(n), cur, u(cfg.out_channels), 3, 1)));
    DecoderNet {
        norm: NormSettings { groups: u(cfg.norm_num_groups), eps: cfg.norm_eps },
        post_quant_conv: conv("autoencoder.post_quant_conv".into(), lat, lat, 1, 1),
        layers,
    }
}

/// `unet.*`: conv_in; per level ResnetBlocks (each followed by its attention where the level has
/// attention) then a stride-2 downsampler except at the deepest level, every output pushed as a
/// skip; middle ResnetBlock -> attention -> ResnetBlock; per level (deepest first)
/// `num_res_blocks + 1` ResnetBlocks on `cat([h, skip])` (+ attention), then a nearest-x2
/// upsampler except at the shallowest level; GroupNorm, SiLU, conv out.
pub fn unet(cfg: &UnetConfig) -> UnetNet {
    let ch: Vec<usize> = cfg.num_channels.iter().map(|&c| u(c)).collect();
    let levels = ch.len();
    let c0 = ch.first().copied().unwrap_or(0);
    let temb = c0.saturating_mul(4);
    let attn = |i: usize| cfg.attention_levels.get(i).copied().unwrap_or(false);
    let heads = |i: usize| u(cfg.num_head_channels.get(i).copied().unwrap_or(0));
    let nres = |i: usize| u(cfg.num_res_blocks.get(i).copied().unwrap_or(0));
    let proj = cfg.attention_output_projection;
    let res = |path: String, cin: usize, cout: usize| {
        Layer::Res(Res { path, cin, cout, temb: Some(temb) })
    };
    let attention = |path: String, c: usize, level: usize| {
        Layer::Attn(Attn { path, c, head_channels: heads(level), proj })
    };

    let mut layers = vec![
        Layer::Conv(conv("unet.conv_in".into(), u(cfg.in_channels), c0, 3, 1)),
        Layer::PushSkip,
    ];
    // The channel count of every pushed skip, to size the up path's concatenations.
    let mut skips = vec![c0];
    let mut cur = c0;
    for (i, &c) in ch.iter().enumerate() {
        let p = format!("unet.down_blocks.{i}");
        for j in 0..nres(i) {
            layers.push(res(format!("{p}.resnets.{j}"), cur, c));
            cur = c;
            if attn(i) {
                layers.push(attention(format!("{p}.attentions.{j}"), cur, i));
            }
            layers.push(Layer::PushSkip);
            skips.push(cur);
        }
        if i + 1 != levels {
            layers.push(Layer::Conv(conv(format!("{p}.downsampler.op"), cur, cur, 3, 2)));
            layers.push(Layer::PushSkip);
            skips.push(cur);
        }
    }
    let last = levels.saturating_sub(1);
    layers.push(res("unet.middle_block.resnet_1".into(), cur, cur));
    layers.push(attention("unet.middle_block.attention".into(), cur, last));
    layers.push(res("unet.middle_block.resnet_2".into(), cur, cur));
    for i in 0..levels {
        let level = levels - 1 - i;
        let p = format!("unet.up_blocks.{i}");
        for j in 0..nres(level) + 1 {
            let skip = skips.pop().unwrap_or(0);
            layers.push(Layer::PopConcat);
            layers.push(res(format!("{p}.resnets.{j}"), cur + skip, ch[level]));
            cur = ch[level];
            if attn(level) {
                layers.push(attention(format!("{p}.attentions.{j}"), cur, level));
            }
        }
        if i + 1 != levels {
            layers.push(Layer::Upsample(conv(format!("{p}.upsampler.conv"), cur, cur, 3, 1)));
        }
    }
    layers.push(norm("unet.out.0".into(), cur));
    layers.push(Layer::Silu);
    layers.push(Layer::Conv(conv("unet.out.2".into(), cur, u(cfg.out_channels), 3, 1)));
    UnetNet {
        norm: NormSettings { groups: u(cfg.norm_num_groups), eps: cfg.norm_eps },
        time_channels: c0,
        time_embed: [
            Linear { path: "unet.time_embed.0".into(), cin: c0, cout: temb },
            Linear { path: "unet.time_embed.2".into(), cin: temb, cout: temb },
        ],
        layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks `layers` from `c` input channels, checking that every layer takes the width the
    /// one before it gives and that skips balance; returns the output width.
    fn walk(layers: &[Layer], mut c: usize) -> usize {
        let mut skips = Vec::new();
        for layer in layers {
            match layer {
                Layer::Conv(k) | Layer::Upsample(k) => {
                    assert_eq!(k.cin, c, "{}", k.path);
                    c = k.cout;
                }
                Layer::Norm { path, c: n } => assert_eq!(*n, c, "{path}"),
                Layer::Silu => {}
                Layer::Res(r) => {
                    assert_eq!(r.cin, c, "{}", r.path);
                    assert_eq!(r.shortcut().is_some(), r.cin != r.cout);
                    c = r.cout;
                }
                Layer::Attn(a) => assert_eq!(a.c, c, "{}", a.path),
                Layer::PushSkip => skips.push(c),
                Layer::PopConcat => c += skips.pop().expect("a skip to pop"),
            }
        }
        assert!(skips.is_empty(), "unused skips");
        c
    }

    #[test]
    fn bundle_networks_chain_their_widths() {
        let e = encoder(&EncoderConfig::bundle());
        assert_eq!(walk(&e.layers, 1), 8);
        let d = decoder(&DecoderConfig::bundle());
        assert_eq!(d.post_quant_conv.cin, 8);
        assert_eq!(walk(&d.layers, 8), 1);
        let u = unet(&UnetConfig::bundle());
        assert_eq!(walk(&u.layers, 8), 8);
        assert_eq!(u.time_embed[0].cout, 4 * u.time_channels);
    }

    #[test]
    fn irregular_unets_balance_their_skips() {
        for (res, attn) in [
            ([1, 3, 2], [true, false, true]),
            ([0, 1, 0], [false, true, false]),
            ([2, 2, 2], [false, false, false]),
        ] {
            let mut cfg = UnetConfig::bundle();
            cfg.num_res_blocks = res.to_vec();
            cfg.attention_levels = attn.to_vec();
            let net = unet(&cfg);
            assert_eq!(walk(&net.layers, 8), 8, "{res:?} {attn:?}");
            let attentions = net.layers.iter().filter(|l| matches!(l, Layer::Attn(_))).count();
            let per_level: usize =
                (0..3).filter(|&i| attn[i]).map(|i| 2 * res[i] as usize + 1).sum();
            assert_eq!(attentions, per_level + 1, "down + up attentions, plus the middle one");
        }
    }

    #[test]
    fn the_encoder_downsampler_pads_after_only() {
        let e = encoder(&EncoderConfig::bundle());
        let downs: Vec<&Conv> = e
            .layers
            .iter()
            .filter_map(|l| match l {
                Layer::Conv(c) if c.stride == 2 => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(downs.len(), EncoderConfig::bundle().num_channels.len() - 1);
        assert!(downs.iter().all(|c| c.pad == (0, 1) && c.path.ends_with(".conv")));
    }
}
