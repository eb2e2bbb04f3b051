//! What a blob holds, as the numbers `brats-ldm inspect` and the Python package's `inspect` report:
//! tensor, parameter and byte counts per network, dtypes, the parameters of unapplied `proj_attn`
//! layers, and the serialisable report itself (the `--json` form). One implementation, so both
//! front ends print the same figures.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{parameter_counts, BetaSchedule, Blob, ModelConfig, SchedulerConfig};

/// Tensors, parameters and bytes of one network in a blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NetworkSummary {
    pub tensors: usize,
    pub parameters: u64,
    pub bytes: u64,
}

/// Which network a stored tensor belongs to: "encoder", "decoder" or "unet".
fn network_of(name: &str) -> &'static str {
    if name.starts_with("autoencoder.encoder.") || name.starts_with("autoencoder.quant_conv_") {
        "encoder"
    } else if name.starts_with("autoencoder.") {
        "decoder"
    } else {
        "unet"
    }
}

/// Per-network totals, keyed by network name.
pub fn networks(blob: &Blob) -> BTreeMap<&'static str, NetworkSummary> {
    let mut out: BTreeMap<&'static str, NetworkSummary> = BTreeMap::new();
    for t in blob.tensors() {
        let e = out.entry(network_of(&t.name)).or_default();
        e.tensors += 1;
        e.parameters += t.shape.iter().product::<usize>() as u64;
        e.bytes += t.len;
    }
    out
}

/// How many tensors are stored in each dtype, keyed by dtype name.
pub fn dtype_counts(blob: &Blob) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for t in blob.tensors() {
        *m.entry(t.dtype.name()).or_insert(0) += 1;
    }
    m
}

/// Parameters of `proj_attn` layers that the UNet's config says are not applied (so not stored).
pub fn unused_proj_attn_parameters(cfg: &ModelConfig) -> u64 {
    match &cfg.unet {
        Some(u) if !u.attention_output_projection => {
            let mut with = cfg.clone();
            if let Some(w) = with.unet.as_mut() {
                w.attention_output_projection = true;
            }
            parameter_counts(&with).unet.saturating_sub(parameter_counts(cfg).unet)
        }
        _ => 0,
    }
}

#[derive(Debug, Serialize)]
pub struct Checksum {
    pub algorithm: &'static str,
    pub value: String,
    pub status: &'static str,
}

#[derive(Debug, Serialize)]
pub struct TensorRow<'a> {
    pub name: &'a str,
    pub dtype: &'static str,
    pub shape: &'a [usize],
    pub offset: u64,
    pub bytes: u64,
}

/// The whole report. Serialised directly (not through a JSON value) so f32 fields print in
/// their shortest form (1e-6, not 9.99999997e-7).
#[derive(Debug, Serialize)]
pub struct BlobReport<'a> {
    pub path: String,
    pub format_version: String,
    pub file_bytes: u64,
    pub header_bytes: u64,
    pub tensor_bytes: u64,
    pub checksum: Checksum,
    pub tensor_count: usize,
    pub dtypes: BTreeMap<&'static str, usize>,
    pub networks: BTreeMap<&'static str, NetworkSummary>,
    pub parameters_total: u64,
    pub unused_proj_attn_parameters: u64,
    pub config: &'a ModelConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Vec<TensorRow<'a>>>,
}

impl<'a> BlobReport<'a> {
    /// The report on an opened (so fully validated) blob; `path` is shown as given.
    pub fn new(blob: &'a Blob, path: String, with_tensors: bool) -> BlobReport<'a> {
        let cfg = blob.config();
        let (major, minor) = blob.format_version();
        let networks = networks(blob);
        BlobReport {
            path,
            format_version: format!("{major}.{minor}"),
            file_bytes: blob.file_len(),
            header_bytes: blob.header_len(),
            tensor_bytes: blob.tensor_bytes(),
            checksum: Checksum { algorithm: "xxh3-64", value: format!("{:016x}", blob.checksum()), status: "verified" },
            tensor_count: blob.tensors().len(),
            dtypes: dtype_counts(blob),
            parameters_total: networks.values().map(|n| n.parameters).sum(),
            networks,
            unused_proj_attn_parameters: unused_proj_attn_parameters(cfg),
            config: cfg,
            tensors: with_tensors.then(|| {
                blob.tensors()
                    .map(|t| TensorRow { name: &t.name, dtype: t.dtype.name(), shape: &t.shape, offset: t.offset, bytes: t.len })
                    .collect()
            }),
        }
    }
}

/// The scheduler in MONAI's terms, one line for the noise schedule and defaults and one per
/// sampler's options, e.g. `T 1000, scaled_linear_beta 0.0015..0.0195, prediction epsilon;
/// default ddim with 50 steps`.
pub fn scheduler_lines(s: &SchedulerConfig) -> [String; 4] {
    let schedule = match s.beta_schedule {
        BetaSchedule::Linear | BetaSchedule::ScaledLinear => {
            format!("{} {}..{}", s.beta_schedule.monai_name(), s.beta_start, s.beta_end)
        }
        BetaSchedule::Sigmoid { sig_range } => {
            format!("sigmoid_beta {}..{} sig_range {sig_range}", s.beta_start, s.beta_end)
        }
        BetaSchedule::Cosine { s: offset } => format!("cosine s {offset}"),
    };
    [
        format!(
            "T {}, {schedule}, prediction {}; default {} with {} steps",
            s.num_train_timesteps,
            s.prediction_type.monai_name(),
            s.default_sampler.name(),
            s.default_steps
        ),
        format!(
            "ddim: clip_sample {}, set_alpha_to_one {}, steps_offset {}",
            s.ddim.clip_sample, s.ddim.set_alpha_to_one, s.ddim.steps_offset
        ),
        format!("ddpm: clip_sample {}, variance_type {}", s.ddpm.clip_sample, s.ddpm.variance_type.monai_name()),
        format!(
            "pndm: skip_prk_steps {}, set_alpha_to_one {}, steps_offset {}",
            s.pndm.skip_prk_steps, s.pndm.set_alpha_to_one, s.pndm.steps_offset
        ),
    ]
}
