//! Matching source checkpoints against the blob's tensor contract: rename (monai >= 1.4 ->
//! generative 0.2.3), prefix by network, drop what the config says is unused, and report every
//! missing, extra or mis-shaped tensor by name, all at once.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;

use ldm_weights::names::{expected_tensors, TensorSpec};
use ldm_weights::ModelConfig;

use crate::keymap::{is_proj_attn, to_generative};
use crate::SourceTensor;

/// Which network a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Autoencoder,
    Unet,
}

impl Network {
    pub fn prefix(self) -> &'static str {
        match self {
            Network::Autoencoder => "autoencoder",
            Network::Unet => "unet",
        }
    }
}

/// A tensor ready for the blob: canonical name, shape, f32 data.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Source tensors deliberately left out, with why.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dropped {
    pub tensors: usize,
    pub parameters: u64,
    pub reason: String,
}

/// The outcome of matching one network.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    /// In the config's canonical order.
    pub tensors: Vec<BlobTensor>,
    /// How many source keys were renamed from monai >= 1.4 naming.
    pub renamed: usize,
    pub dropped: Vec<Dropped>,
}

/// Everything wrong with one network's checkpoint against the config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mismatch {
    pub network: &'static str,
    pub missing: Vec<TensorSpec>,
    pub extra: Vec<(String, Vec<usize>)>,
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    pub duplicated: Vec<String>,
    pub non_finite: Vec<(String, usize)>,
    /// monai >= 1.4 `attn.out_proj` tensors while the config says the projection is not applied
    /// (monai applies it: such a checkpoint needs `attention_output_projection: true`).
    pub applied_out_proj: Vec<String>,
    /// How many of the checkpoint's tensors matched a required name.
    pub matched: usize,
}

impl Mismatch {
    fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.misshaped.is_empty()
            && self.duplicated.is_empty()
            && self.non_finite.is_empty()
            && self.applied_out_proj.is_empty()
    }
}

/// Lines of one kind shown in a mismatch report before "... and N more".
const REPORT_LINES: usize = 12;

/// Writes the first `REPORT_LINES` of `items` with `line`, then how many were left out.
fn capped<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    what: &str,
    line: impl Fn(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    for item in items.iter().take(REPORT_LINES) {
        line(f, item)?;
    }
    if items.len() > REPORT_LINES {
        writeln!(f, "  ... and {} more {what}", items.len() - REPORT_LINES)?;
    }
    Ok(())
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names come from the checkpoint: escaped, so none can break or forge a line.
        let esc = |s: &str| ldm_io::escape::escape(s).into_owned();
        let only_non_finite = self.missing.is_empty()
            && self.extra.is_empty()
            && self.misshaped.is_empty()
            && self.duplicated.is_empty()
            && self.applied_out_proj.is_empty();
        if only_non_finite && !self.non_finite.is_empty() {
            // One line: many damaged tensors mean damaged data, not a wrong architecture.
            let values: usize = self.non_finite.iter().map(|(_, k)| k).sum();
            let (first, k) = &self.non_finite[0];
            return write!(
                f,
                "the {} checkpoint holds NaN or infinite values in {} tensors ({values} values; first `{}`: {k}); \
                 its data is damaged, or its byte order or dtype is not what it claims",
                self.network,
                self.non_finite.len(),
                esc(first)
            );
        }
        writeln!(
            f,
            "the {} checkpoint does not match the architecture:",
            self.network
        )?;
        capped(f, &self.missing, "missing", |f, t| {
            writeln!(f, "  missing     {} {:?}", t.name, t.shape)
        })?;
        capped(f, &self.extra, "unexpected", |f, (n, s)| {
            writeln!(f, "  unexpected  {} {s:?}", esc(n))
        })?;
        capped(
            f,
            &self.misshaped,
            "with the wrong shape",
            |f, (n, want, got)| {
                writeln!(
                    f,
                    "  wrong shape {}: expected {want:?}, found {got:?}",
                    esc(n)
                )
            },
        )?;
        capped(f, &self.duplicated, "duplicated", |f, n| {
            writeln!(f, "  duplicated  {} (present under both namings)", esc(n))
        })?;
        capped(f, &self.non_finite, "non-finite", |f, (n, k)| {
            writeln!(f, "  non-finite  {}: {k} NaN or infinite values", esc(n))
        })?;
        capped(f, &self.applied_out_proj, "out_proj", |f, n| {
            writeln!(f, "  out_proj    {}: monai >= 1.4 applies this output projection, but the config says it is not applied", esc(n))
        })?;
        if !self.applied_out_proj.is_empty() {
            writeln!(f, "  (a checkpoint trained with monai >= 1.4 and include_fc=True needs `\"attention_output_projection\": true` in network_def)")?;
        }
        if self.matched == 0 && !self.missing.is_empty() {
            writeln!(f, "  none of the checkpoint's tensors belongs to the {}: is this the other network's checkpoint?", self.network)?;
        }
        write!(
            f,
            "({} missing, {} unexpected, {} wrong shape{}) — check --config/--preset against the checkpoint",
            self.missing.len(),
            self.extra.len(),
            self.misshaped.len(),
            if self.non_finite.is_empty() { "" } else { ", non-finite values" }
        )
    }
}

impl std::error::Error for Mismatch {}

/// Autoencoder keys that belong to the encoder side.
fn is_encoder_key(key: &str) -> bool {
    key.starts_with("encoder.")
        || key.starts_with("quant_conv_mu.")
        || key.starts_with("quant_conv_log_sigma.")
}

/// Match one network's source tensors against what `cfg` requires of it.
///
/// `cfg` must already hold the network's config. Encoder tensors are dropped (and reported)
/// when `cfg.encoder` is `None`; `proj_attn` tensors when the UNet does not apply them.
pub fn match_network(
    network: Network,
    source: Vec<SourceTensor>,
    cfg: &ModelConfig,
) -> Result<Matched, Box<Mismatch>> {
    let prefix = network.prefix();
    let expected: Vec<TensorSpec> = expected_tensors(cfg)
        .into_iter()
        .filter(|t| {
            t.name
                .strip_prefix(prefix)
                .is_some_and(|r| r.starts_with('.'))
        })
        .collect();
    let want: HashMap<&str, &TensorSpec> = expected.iter().map(|t| (t.name.as_str(), t)).collect();
    let drop_proj = network == Network::Unet
        && cfg
            .unet
            .as_ref()
            .is_some_and(|u| !u.attention_output_projection);
    let drop_encoder = network == Network::Autoencoder && cfg.encoder.is_none();

    let mut mm = Mismatch {
        network: prefix,
        ..Mismatch::default()
    };
    let mut found: HashMap<String, SourceTensor> = HashMap::new();
    let mut renamed = 0;
    let mut proj = Dropped { reason: "attention output projection (proj_attn) is not applied by generative 0.2.3 (MONAI issue 7991)".into(), ..Dropped::default() };
    let mut enc = Dropped {
        reason: "encoder tensors (the blob holds the decoder only)".into(),
        ..Dropped::default()
    };
    for mut t in source {
        let mapped = to_generative(&t.name);
        let from_out_proj = t.name.split('.').any(|p| p == "out_proj");
        if mapped != t.name {
            renamed += 1;
        }
        let numel = t.data.len() as u64;
        if drop_encoder && is_encoder_key(&mapped) {
            enc.tensors += 1;
            enc.parameters += numel;
            continue;
        }
        let full = format!("{prefix}.{mapped}");
        match want.get(full.as_str()) {
            Some(spec) => {
                if spec.shape != t.shape {
                    mm.misshaped
                        .push((full.clone(), spec.shape.clone(), t.shape.clone()));
                }
                let bad = t.data.iter().filter(|v| !v.is_finite()).count();
                if bad > 0 {
                    mm.non_finite.push((full.clone(), bad));
                }
                match found.entry(full) {
                    Entry::Occupied(e) => mm.duplicated.push(e.key().clone()),
                    Entry::Vacant(e) => {
                        t.name = e.key().clone();
                        e.insert(t);
                    }
                }
            }
            None if drop_proj && is_proj_attn(&mapped) && from_out_proj => {
                mm.applied_out_proj.push(t.name.clone())
            }
            None if drop_proj && is_proj_attn(&mapped) => {
                proj.tensors += 1;
                proj.parameters += numel;
            }
            None => mm.extra.push((full, t.shape.clone())),
        }
    }
    for spec in &expected {
        if !found.contains_key(&spec.name) {
            mm.missing.push(spec.clone());
        }
    }
    if !mm.is_empty() {
        mm.matched = found.len();
        return Err(Box::new(mm));
    }
    let tensors = expected
        .iter()
        .filter_map(|spec| found.remove(&spec.name))
        .map(|t| BlobTensor {
            name: t.name,
            shape: t.shape,
            data: t.data,
        })
        .collect();
    let dropped = [proj, enc].into_iter().filter(|d| d.tensors > 0).collect();
    Ok(Matched {
        tensors,
        renamed,
        dropped,
    })
}
