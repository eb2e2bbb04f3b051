//! `brats-ldm inspect`: what a blob holds — configs, tensor and parameter counts per network,
//! bytes, dtypes, checksum status and provenance — for a person, or as JSON for scripts.
//!
//! The blob is opened through the validating reader, so a blob that inspects at all has a
//! verified checksum, a consistent config and exactly the tensors its config requires.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ldm_weights::report::{dtype_counts, networks, unused_proj_attn_parameters, BlobReport};
use ldm_weights::Blob;

use ldm_io::escape::escape;

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
    let nets = networks(blob);
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
    let [head, ddim, ddpm, pndm] = ldm_weights::report::scheduler_lines(&cfg.scheduler);
    push_line!(out, "scheduler:   {head}");
    for line in [ddim, ddpm, pndm] {
        push_line!(out, "             {line}");
    }
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
                t.dtype.name(),
                list(&t.shape),
                t.offset,
                t.len
            );
        }
    }
    out
}

fn render_json(args: &InspectArgs, blob: &Blob) -> serde_json::Result<String> {
    let report = BlobReport::new(blob, args.model.display().to_string(), args.tensors);
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
