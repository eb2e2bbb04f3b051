//! `brats-ldm inspect`: what a blob holds — configs, tensor and parameter counts per network,
//! bytes, dtypes, checksum status and provenance — for a person, or as JSON for scripts.
//!
//! The blob is opened through the validating reader, so a blob that inspects at all has a
//! verified checksum, a consistent config and exactly the tensors its config requires.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ldm_weights::{parameter_counts, Blob, ModelConfig};
use serde::Serialize;

use crate::cmd::convert::dtype_name;
use crate::escape::escape;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The blob to describe.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also list every tensor (name, dtype, shape, offset, bytes).
    #[arg(long)]
    pub tensors: bool,
}

/// Append one formatted line to a String.
macro_rules! push_line {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Parameters of `proj_attn` layers that the UNet's config says are not applied (so not stored).
fn unused_proj_attn_parameters(cfg: &ModelConfig) -> u64 {
    match &cfg.unet {
        Some(u) if !u.attention_output_projection => {
            let mut with = cfg.clone();
            if let Some(w) = with.unet.as_mut() {
                w.attention_output_projection = true;
            }
            parameter_counts(&with)
                .unet
                .saturating_sub(parameter_counts(cfg).unet)
        }
        _ => 0,
    }
}

#[derive(Serialize)]
struct NetworkSummary {
    tensors: usize,
    parameters: u64,
    bytes: u64,
}

fn summarize(blob: &Blob) -> BTreeMap<&'static str, NetworkSummary> {
    let mut out: BTreeMap<&'static str, NetworkSummary> = BTreeMap::new();
    for t in blob.tensors() {
        let net = if t.name.starts_with("autoencoder.encoder.")
            || t.name.starts_with("autoencoder.quant_conv_")
        {
            "encoder"
        } else if t.name.starts_with("autoencoder.") {
            "decoder"
        } else {
            "unet"
        };
        let e = out.entry(net).or_insert(NetworkSummary {
            tensors: 0,
            parameters: 0,
            bytes: 0,
        });
        e.tensors += 1;
        e.parameters += t.shape.iter().product::<usize>() as u64;
        e.bytes += t.len;
    }
    out
}

fn dtype_counts(blob: &Blob) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for t in blob.tensors() {
        *m.entry(dtype_name(t.dtype)).or_insert(0) += 1;
    }
    m
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_text(args: &InspectArgs, blob: &Blob) -> String {
    let mut out = String::new();
    let cfg = blob.config();
    let (major, minor) = blob.format_version();
    let nets = summarize(blob);
    push_line!(
        out,
        "blob:        {}",
        escape(&args.model.display().to_string())
    );
    push_line!(
        out,
        "format:      version {major}.{minor}, {} bytes (header {} bytes, tensor data {} bytes)",
        blob.file_len(),
        blob.header_len(),
        blob.tensor_bytes()
    );
    push_line!(
        out,
        "checksum:    verified (xxh3-64 {:016x})",
        blob.checksum()
    );
    let dts: Vec<String> = dtype_counts(blob)
        .into_iter()
        .map(|(d, n)| format!("{d} x{n}"))
        .collect();
    push_line!(
        out,
        "tensors:     {} ({})",
        blob.tensors().len(),
        dts.join(", ")
    );
    let p = &cfg.provenance;
    push_line!(
        out,
        "provenance:  producer \"{}\"; data \"{}\"; steps {}; date {}",
        escape(&p.producer),
        escape(&p.data),
        p.steps,
        if p.date.is_empty() {
            "(not recorded)".into()
        } else {
            escape(&p.date)
        }
    );
    push_line!(
        out,
        "latent:      shape [{}], scale factor {}",
        list(&cfg.latent_shape),
        cfg.scale_factor
    );
    let s = &cfg.scheduler;
    push_line!(
        out,
        "scheduler:   {:?} betas {}..{} over {} steps, clip_sample {}; default {:?} with {} steps",
        s.beta_schedule,
        s.beta_start,
        s.beta_end,
        s.num_train_timesteps,
        s.clip_sample,
        s.default_sampler,
        s.default_steps
    );
    let g = &cfg.geometry;
    push_line!(
        out,
        "geometry:    spacing [{}] mm, orientation {}, intensity range [{}]",
        list(&g.spacing_mm),
        escape(&g.orientation),
        list(&g.intensity_range)
    );
    let count = |k: &str| {
        nets.get(k)
            .map(|n| (n.tensors, n.parameters, n.bytes))
            .unwrap_or((0, 0, 0))
    };
    if let Some(d) = &cfg.decoder {
        let (t, n, b) = count("decoder");
        push_line!(out,
            "decoder:     channels [{}], res blocks [{}], latent {}, out {}, groups {}, eps {:e}; {t} tensors, {n} parameters, {b} bytes",
            list(&d.num_channels), list(&d.num_res_blocks), d.latent_channels, d.out_channels, d.norm_num_groups, d.norm_eps
        );
    }
    if let Some(e) = &cfg.encoder {
        let (t, n, b) = count("encoder");
        push_line!(out,
            "encoder:     channels [{}], res blocks [{}], in {}, latent {}, groups {}, eps {:e}; {t} tensors, {n} parameters, {b} bytes",
            list(&e.num_channels), list(&e.num_res_blocks), e.in_channels, e.latent_channels, e.norm_num_groups, e.norm_eps
        );
    }
    if let Some(u) = &cfg.unet {
        let (t, n, b) = count("unet");
        push_line!(out,
            "unet:        channels [{}], attention [{}], head channels [{}], res blocks [{}], in {}, out {}, groups {}, eps {:e}; {t} tensors, {n} parameters, {b} bytes",
            list(&u.num_channels), list(&u.attention_levels), list(&u.num_head_channels), list(&u.num_res_blocks),
            u.in_channels, u.out_channels, u.norm_num_groups, u.norm_eps
        );
        if u.attention_output_projection {
            push_line!(
                out,
                "             attention output projection (proj_attn): applied and stored"
            );
        } else {
            push_line!(out,
                "             attention output projection (proj_attn): not applied (generative 0.2.3 semantics); {} unused parameters not stored",
                unused_proj_attn_parameters(cfg)
            );
        }
    }
    let total: u64 = nets.values().map(|n| n.parameters).sum();
    push_line!(out, "parameters:  {total} in total");
    if args.tensors {
        for t in blob.tensors() {
            push_line!(
                out,
                "  {:<64} {:<4} [{}] @{} {} bytes",
                escape(&t.name),
                dtype_name(t.dtype),
                list(&t.shape),
                t.offset,
                t.len
            );
        }
    }
    out
}

#[derive(Serialize)]
struct Checksum {
    algorithm: &'static str,
    value: String,
    status: &'static str,
}

#[derive(Serialize)]
struct TensorRow<'a> {
    name: &'a str,
    dtype: &'static str,
    shape: &'a [usize],
    offset: u64,
    bytes: u64,
}

/// The `--json` report. Serialised directly (not through `serde_json::Value`) so f32 fields
/// print in their shortest form (1e-6, not 9.99999997e-7).
#[derive(Serialize)]
struct Report<'a> {
    path: String,
    format_version: String,
    file_bytes: u64,
    header_bytes: u64,
    tensor_bytes: u64,
    checksum: Checksum,
    tensor_count: usize,
    dtypes: BTreeMap<&'static str, usize>,
    networks: BTreeMap<&'static str, NetworkSummary>,
    parameters_total: u64,
    unused_proj_attn_parameters: u64,
    config: &'a ModelConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    tensors: Option<Vec<TensorRow<'a>>>,
}

fn render_json(args: &InspectArgs, blob: &Blob) -> serde_json::Result<String> {
    let cfg = blob.config();
    let (major, minor) = blob.format_version();
    let networks = summarize(blob);
    let report = Report {
        path: args.model.display().to_string(),
        format_version: format!("{major}.{minor}"),
        file_bytes: blob.file_len(),
        header_bytes: blob.header_len(),
        tensor_bytes: blob.tensor_bytes(),
        checksum: Checksum {
            algorithm: "xxh3-64",
            value: format!("{:016x}", blob.checksum()),
            status: "verified",
        },
        tensor_count: blob.tensors().len(),
        dtypes: dtype_counts(blob),
        parameters_total: networks.values().map(|n| n.parameters).sum(),
        networks,
        unused_proj_attn_parameters: unused_proj_attn_parameters(cfg),
        config: cfg,
        tensors: args.tensors.then(|| {
            blob.tensors()
                .map(|t| TensorRow {
                    name: &t.name,
                    dtype: dtype_name(t.dtype),
                    shape: &t.shape,
                    offset: t.offset,
                    bytes: t.len,
                })
                .collect()
        }),
    };
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    Ok(text)
}

/// Write the report; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let blob = Blob::open(&args.model)
        .with_context(|| format!("{} is not a valid blob", args.model.display()))?;
    let text = if args.json {
        render_json(&args, &blob).context("serialising the report")?
    } else {
        render_text(&args, &blob)
    };
    emit(&text)
}
