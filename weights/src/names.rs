//! The tensor contract: which tensors (name and PyTorch shape) a `ModelConfig` requires.
//!
//! Names are MONAI Generative 0.2.3 state-dict keys prefixed by the network (`autoencoder.` or
//! `unet.`). The order of `expected_tensors` is canonical: it is the order in which a blob stores
//! its tensors (PyTorch module-registration order within each network; autoencoder first).
//! Call these on a config that `ModelConfig::validate` accepts (the blob reader and writer do):
//! they never panic, but an unvalidated config can list meaningless or enormously many tensors.

use crate::config::{DecoderConfig, EncoderConfig, ModelConfig, UnetConfig};

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

fn u(x: u32) -> usize {
    x as usize
}

/// Small builder that prefixes names and pushes specs.
struct Out<'a> {
    v: &'a mut Vec<TensorSpec>,
}

impl Out<'_> {
    fn push(&mut self, name: String, shape: Vec<usize>) {
        self.v.push(TensorSpec { name, shape });
    }
    /// `<p>.conv.weight` / `<p>.conv.bias` of a MONAI `Convolution` (3-D, kernel k).
    fn conv(&mut self, p: &str, cin: usize, cout: usize, k: usize) {
        self.push(format!("{p}.conv.weight"), vec![cout, cin, k, k, k]);
        self.push(format!("{p}.conv.bias"), vec![cout]);
    }
    /// `<p>.weight` / `<p>.bias` of a GroupNorm over `c` channels.
    fn norm(&mut self, p: &str, c: usize) {
        self.push(format!("{p}.weight"), vec![c]);
        self.push(format!("{p}.bias"), vec![c]);
    }
    /// `<p>.weight` / `<p>.bias` of a Linear(cin -> cout).
    fn linear(&mut self, p: &str, cin: usize, cout: usize) {
        self.push(format!("{p}.weight"), vec![cout, cin]);
        self.push(format!("{p}.bias"), vec![cout]);
    }
    /// Autoencoder `ResBlock`: norm1, conv1, norm2, conv2, nin_shortcut when channels change.
    fn ae_resblock(&mut self, p: &str, cin: usize, cout: usize) {
        self.norm(&format!("{p}.norm1"), cin);
        self.conv(&format!("{p}.conv1"), cin, cout, 3);
        self.norm(&format!("{p}.norm2"), cout);
        self.conv(&format!("{p}.conv2"), cout, cout, 3);
        if cin != cout {
            self.conv(&format!("{p}.nin_shortcut"), cin, cout, 1);
        }
    }
    /// UNet `ResnetBlock`: norm1, conv1, time_emb_proj, norm2, conv2, skip_connection when
    /// channels change.
    fn unet_resnet(&mut self, p: &str, cin: usize, cout: usize, temb: usize) {
        self.norm(&format!("{p}.norm1"), cin);
        self.conv(&format!("{p}.conv1"), cin, cout, 3);
        self.linear(&format!("{p}.time_emb_proj"), temb, cout);
        self.norm(&format!("{p}.norm2"), cout);
        self.conv(&format!("{p}.conv2"), cout, cout, 3);
        if cin != cout {
            self.conv(&format!("{p}.skip_connection"), cin, cout, 1);
        }
    }
    /// UNet `AttentionBlock`: norm, to_q, to_k, to_v (+ proj_attn when applied).
    fn attention(&mut self, p: &str, c: usize, proj: bool) {
        self.norm(&format!("{p}.norm"), c);
        self.linear(&format!("{p}.to_q"), c, c);
        self.linear(&format!("{p}.to_k"), c, c);
        self.linear(&format!("{p}.to_v"), c, c);
        if proj {
            self.linear(&format!("{p}.proj_attn"), c, c);
        }
    }
}

/// `autoencoder.encoder.*`, `autoencoder.quant_conv_mu.*`, `autoencoder.quant_conv_log_sigma.*`.
fn encoder_tensors(enc: &EncoderConfig, v: &mut Vec<TensorSpec>) {
    let mut o = Out { v };
    let ch: Vec<usize> = enc.num_channels.iter().map(|&c| u(c)).collect();
    let Some(&first) = ch.first() else { return };
    let levels = ch.len();
    let mut block = 0usize;
    o.conv(
        &format!("autoencoder.encoder.blocks.{block}"),
        u(enc.in_channels),
        first,
        3,
    );
    block += 1;
    let mut cur = first;
    for (i, &c) in ch.iter().enumerate() {
        let nres = enc.num_res_blocks.get(i).copied().unwrap_or(0);
        for _ in 0..nres {
            o.ae_resblock(&format!("autoencoder.encoder.blocks.{block}"), cur, c);
            cur = c;
            block += 1;
        }
        if i + 1 != levels {
            o.conv(&format!("autoencoder.encoder.blocks.{block}.conv"), cur, cur, 3);
            block += 1;
        }
    }
    o.norm(&format!("autoencoder.encoder.blocks.{block}"), cur);
    block += 1;
    let lat = u(enc.latent_channels);
    o.conv(&format!("autoencoder.encoder.blocks.{block}"), cur, lat, 3);
    o.conv("autoencoder.quant_conv_mu", lat, lat, 1);
    o.conv("autoencoder.quant_conv_log_sigma", lat, lat, 1);
}

/// `autoencoder.decoder.*` and `autoencoder.post_quant_conv.*`.
fn decoder_tensors(dec: &DecoderConfig, v: &mut Vec<TensorSpec>) {
    let mut o = Out { v };
    let rev: Vec<usize> = dec.num_channels.iter().rev().map(|&c| u(c)).collect();
    let rev_res: Vec<u32> = dec.num_res_blocks.iter().rev().copied().collect();
    let Some(&deepest) = rev.first() else { return };
    let levels = rev.len();
    let lat = u(dec.latent_channels);
    let mut block = 0usize;
    o.conv(&format!("autoencoder.decoder.blocks.{block}"), lat, deepest, 3);
    block += 1;
    let mut cur = deepest;
    for (i, &c) in rev.iter().enumerate() {
        let nres = rev_res.get(i).copied().unwrap_or(0);
        for _ in 0..nres {
            o.ae_resblock(&format!("autoencoder.decoder.blocks.{block}"), cur, c);
            cur = c;
            block += 1;
        }
        if i + 1 != levels {
            o.conv(&format!("autoencoder.decoder.blocks.{block}.conv"), cur, cur, 3);
            block += 1;
        }
    }
    o.norm(&format!("autoencoder.decoder.blocks.{block}"), cur);
    block += 1;
    o.conv(
        &format!("autoencoder.decoder.blocks.{block}"),
        cur,
        u(dec.out_channels),
        3,
    );
    o.conv("autoencoder.post_quant_conv", lat, lat, 1);
}

/// `unet.*`.
fn unet_tensors(cfg: &UnetConfig, v: &mut Vec<TensorSpec>) {
    let mut o = Out { v };
    let ch: Vec<usize> = cfg.num_channels.iter().map(|&c| u(c)).collect();
    let Some(&c0) = ch.first() else { return };
    let levels = ch.len();
    let temb = c0.saturating_mul(4);
    let proj = cfg.attention_output_projection;
    let attn = |i: usize| cfg.attention_levels.get(i).copied().unwrap_or(false);
    let nres = |i: usize| u(cfg.num_res_blocks.get(i).copied().unwrap_or(0));

    o.conv("unet.conv_in", u(cfg.in_channels), c0, 3);
    o.linear("unet.time_embed.0", c0, temb);
    o.linear("unet.time_embed.2", temb, temb);

    // Down path: resnets, then attentions (registration order), then the downsampler.
    let mut out_ch = c0;
    for (i, &c) in ch.iter().enumerate() {
        let in_ch = out_ch;
        out_ch = c;
        let p = format!("unet.down_blocks.{i}");
        for j in 0..nres(i) {
            let cin = if j == 0 { in_ch } else { out_ch };
            o.unet_resnet(&format!("{p}.resnets.{j}"), cin, out_ch, temb);
        }
        if attn(i) {
            for j in 0..nres(i) {
                o.attention(&format!("{p}.attentions.{j}"), out_ch, proj);
            }
        }
        if i + 1 != levels {
            o.conv(&format!("{p}.downsampler.op"), out_ch, out_ch, 3);
        }
    }

    // Middle block: always Res -> Attn -> Res at the deepest width.
    let c_last = ch[levels - 1];
    o.unet_resnet("unet.middle_block.resnet_1", c_last, c_last, temb);
    o.attention("unet.middle_block.attention", c_last, proj);
    o.unet_resnet("unet.middle_block.resnet_2", c_last, c_last, temb);

    // Up path (MONAI's skip-concat bookkeeping): level i of the reversed list has
    // num_res_blocks+1 resnets; resnet j takes (prev_output if j == 0 else out) channels of h
    // concatenated with a skip of (input_channel if j is the last else out) channels.
    let rev: Vec<usize> = ch.iter().rev().copied().collect();
    let mut out_ch = rev[0];
    for i in 0..levels {
        let prev_out = out_ch;
        out_ch = rev[i];
        let in_ch = rev[(i + 1).min(levels - 1)];
        let level = levels - 1 - i;
        let n = nres(level) + 1;
        let p = format!("unet.up_blocks.{i}");
        for j in 0..n {
            let skip = if j + 1 == n { in_ch } else { out_ch };
            let h = if j == 0 { prev_out } else { out_ch };
            o.unet_resnet(&format!("{p}.resnets.{j}"), h + skip, out_ch, temb);
        }
        if attn(level) {
            for j in 0..n {
                o.attention(&format!("{p}.attentions.{j}"), out_ch, proj);
            }
        }
        if i + 1 != levels {
            o.conv(&format!("{p}.upsampler.conv"), out_ch, out_ch, 3);
        }
    }

    o.norm("unet.out.0", c0);
    o.conv("unet.out.2", c0, u(cfg.out_channels), 3);
}
