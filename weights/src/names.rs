//! The tensor contract: which tensors (name and PyTorch shape) a `ModelConfig` requires, derived
//! from the networks' one declaration (`network`).
//!
//! Names are MONAI Generative 0.2.3 state-dict keys prefixed by the network (`autoencoder.` or
//! `unet.`). The order of `expected_tensors` is canonical: it is the order in which a blob stores
//! its tensors (PyTorch module-registration order within each network; autoencoder first).
//! Call these on a config that `ModelConfig::validate` accepts (the blob reader and writer do):
//! they never panic, but an unvalidated config can list meaningless or enormously many tensors.

use crate::config::{DecoderConfig, EncoderConfig, ModelConfig, UnetConfig};
use crate::network::{self, Conv, Layer, Linear};

/// One tensor a config requires: its blob name and its shape (PyTorch layout).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Number of elements (saturating, so absurd shapes cannot overflow).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
    }
}

/// Parameter counts per network, as PyTorch counts them for the stored tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamCounts {
    /// `post_quant_conv` + decoder.
    pub decoder: u64,
    /// Encoder + `quant_conv_mu` + `quant_conv_log_sigma`.
    pub encoder: u64,
    /// Diffusion UNet (without `proj_attn` unless the config applies it).
    pub unet: u64,
}

impl ParamCounts {
    pub fn total(&self) -> u64 {
        self.decoder.saturating_add(self.encoder).saturating_add(self.unet)
    }
}

/// Every tensor `cfg` requires, in canonical (storage) order.
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let mut out = Vec::new();
    if let Some(enc) = &cfg.encoder {
        encoder_tensors(enc, &mut out);
    }
    if let Some(dec) = &cfg.decoder {
        decoder_tensors(dec, &mut out);
    }
    if let Some(unet) = &cfg.unet {
        unet_tensors(unet, &mut out);
    }
    out
}

/// Parameter counts of each network of `cfg` (sum of `numel` over its expected tensors).
pub fn parameter_counts(cfg: &ModelConfig) -> ParamCounts {
    let count = |v: Vec<TensorSpec>| v.iter().map(|t| t.numel() as u64).fold(0u64, u64::saturating_add);
    let mut pc = ParamCounts::default();
    if let Some(enc) = &cfg.encoder {
        let mut v = Vec::new();
        encoder_tensors(enc, &mut v);
        pc.encoder = count(v);
    }
    if let Some(dec) = &cfg.decoder {
        let mut v = Vec::new();
        decoder_tensors(dec, &mut v);
        pc.decoder = count(v);
    }
    if let Some(unet) = &cfg.unet {
        let mut v = Vec::new();
        unet_tensors(unet, &mut v);
        pc.unet = count(v);
    }
    pc
}

/// Which network a blob tensor name belongs to, from its prefix.
pub fn network_of(name: &str) -> Option<&'static str> {
    if name.starts_with("autoencoder.") {
        Some("autoencoder")
    } else if name.starts_with("unet.") {
        Some("unet")
    } else {
        None
    }
}

/// The tensors of one layer, in PyTorch registration order.
fn layer_tensors(layer: &Layer, out: &mut Vec<TensorSpec>) {
    match layer {
        Layer::Conv(c) | Layer::Upsample(c) => conv_tensors(c, out),
        Layer::Norm { path, c } => norm_tensors(path, *c, out),
        Layer::Res(r) => {
            norm_tensors(&format!("{}.norm1", r.path), r.cin, out);
            conv_tensors(&r.conv1(), out);
            if let Some(l) = r.time_emb_proj() {
                linear_tensors(&l, out);
            }
            norm_tensors(&format!("{}.norm2", r.path), r.cout, out);
            conv_tensors(&r.conv2(), out);
            if let Some(s) = r.shortcut() {
                conv_tensors(&s, out);
            }
        }
        Layer::Attn(a) => {
            norm_tensors(&format!("{}.norm", a.path), a.c, out);
            for l in a.linears() {
                linear_tensors(&l, out);
            }
        }
        Layer::Silu | Layer::PushSkip | Layer::PopConcat => {}
    }
}

fn conv_tensors(c: &Conv, out: &mut Vec<TensorSpec>) {
    out.push(TensorSpec {
        name: format!("{}.conv.weight", c.path),
        shape: vec![c.cout, c.cin, c.k, c.k, c.k],
    });
    out.push(TensorSpec {
        name: format!("{}.conv.bias", c.path),
        shape: vec![c.cout],
    });
}

fn norm_tensors(path: &str, c: usize, out: &mut Vec<TensorSpec>) {
    out.push(TensorSpec {
        name: format!("{path}.weight"),
        shape: vec![c],
    });
    out.push(TensorSpec {
        name: format!("{path}.bias"),
        shape: vec![c],
    });
}

fn linear_tensors(l: &Linear, out: &mut Vec<TensorSpec>) {
    out.push(TensorSpec {
        name: format!("{}.weight", l.path),
        shape: vec![l.cout, l.cin],
    });
    out.push(TensorSpec {
        name: format!("{}.bias", l.path),
        shape: vec![l.cout],
    });
}

/// `autoencoder.encoder.*`, `autoencoder.quant_conv_mu.*`, `autoencoder.quant_conv_log_sigma.*`.
fn encoder_tensors(enc: &EncoderConfig, out: &mut Vec<TensorSpec>) {
    let net = network::encoder(enc);
    for layer in &net.layers {
        layer_tensors(layer, out);
    }
    conv_tensors(&net.quant_conv_mu, out);
    conv_tensors(&net.quant_conv_log_sigma, out);
}

/// `autoencoder.decoder.*` and `autoencoder.post_quant_conv.*` (registered after the decoder).
fn decoder_tensors(dec: &DecoderConfig, out: &mut Vec<TensorSpec>) {
    let net = network::decoder(dec);
    for layer in &net.layers {
        layer_tensors(layer, out);
    }
    conv_tensors(&net.post_quant_conv, out);
}

/// `unet.*`: conv_in, the time embedding, then the layers in registration order, which differs
/// from forward order in one way: inside one `down_blocks.i` / `up_blocks.i`, all resnets
/// register before all attentions, and the down/upsampler last.
fn unet_tensors(cfg: &UnetConfig, out: &mut Vec<TensorSpec>) {
    let net = network::unet(cfg);
    let mut layers = net.layers.iter();
    if let Some(conv_in) = layers.next() {
        layer_tensors(conv_in, out);
    }
    for l in &net.time_embed {
        linear_tensors(l, out);
    }
    let mut keyed: Vec<((usize, u8), &Layer)> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    for layer in layers {
        let Some(path) = layer_path(layer) else {
            continue;
        };
        let (group, rank) = registration_key(path);
        let index = match groups.iter().position(|g| g == group) {
            Some(i) => i,
            None => {
                groups.push(group.to_string());
                groups.len() - 1
            }
        };
        keyed.push(((index, rank), layer));
    }
    keyed.sort_by_key(|(key, _)| *key);
    for (_, layer) in keyed {
        layer_tensors(layer, out);
    }
}

fn layer_path(layer: &Layer) -> Option<&str> {
    match layer {
        Layer::Conv(c) | Layer::Upsample(c) => Some(&c.path),
        Layer::Norm { path, .. } => Some(path),
        Layer::Res(r) => Some(&r.path),
        Layer::Attn(a) => Some(&a.path),
        Layer::Silu | Layer::PushSkip | Layer::PopConcat => None,
    }
}

/// The module a UNet layer registers under (`unet.down_blocks.1` for its resnets, attentions
/// and sampler) and its rank there: resnets 0, attentions 1, anything else 2.
fn registration_key(path: &str) -> (&str, u8) {
    for block in ["unet.down_blocks.", "unet.up_blocks."] {
        if let Some(rest) = path.strip_prefix(block) {
            let level_len = rest.find('.').unwrap_or(rest.len());
            let group = &path[..block.len() + level_len];
            let member = &rest[level_len..];
            let rank = if member.starts_with(".resnets.") {
                0
            } else if member.starts_with(".attentions.") {
                1
            } else {
                2
            };
            return (group, rank);
        }
    }
    (path, 0)
}
