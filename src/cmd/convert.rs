//! `brats-ldm convert`: MONAI checkpoints (`.pt` zip+pickle or `.safetensors`, generative 0.2.x
//! or monai >= 1.4 key names) -> one frozen weight blob, without Python.
//!
//! The output depends only on the tensors and the architecture: provenance holds neither the
//! source file names nor a date, so every source of the same weights gives the same bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use ldm_weights::{
    write_blob_file, Blob, DType, ModelConfig, OutputGeometry, Provenance, TensorData,
};

use crate::import::arch::Architecture;
use crate::import::assemble::{match_network, Matched, Network};
use crate::import::read_checkpoint;

/// Print a status line; a closed stdout must not abort a conversion.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The autoencoder checkpoint (the bundle's model_autoencoder.pt, or .safetensors).
    #[arg(long, value_name = "FILE")]
    pub autoencoder: Option<PathBuf>,
    /// The diffusion UNet checkpoint (the bundle's model.pt, or .safetensors).
    #[arg(long, value_name = "FILE")]
    pub unet: Option<PathBuf>,
    /// Architecture from a JSON file mirroring the bundle's config (`autoencoder_def`,
    /// `network_def`, optional `noise_scheduler`, `latent_shape`, `scale_factor`).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "preset",
        required_unless_present = "preset"
    )]
    pub config: Option<PathBuf>,
    /// A built-in architecture.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Storage type of the blob's tensors.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    /// Latents are divided by this before decoding. The bundle's own sampler does not divide:
    /// 1.0 (the default unless the config file sets one).
    #[arg(long)]
    pub scale_factor: Option<f32>,
    /// Default latent shape C,D,H,W (default: the config's, else the bundle's 36,44,28 grid).
    #[arg(long, value_name = "C,D,H,W", value_parser = parse_latent_shape)]
    pub latent_shape: Option<[u32; 4]>,
    /// Read the state dict from this entry of a checkpoint that nests it (e.g. `state_dict`);
    /// for safetensors, keep the tensors named `NAME.*`.
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
    /// The UNet's attention applies its output projection (`proj_attn`, monai >= 1.4
    /// `attn.out_proj` with include_fc=True). Off for bundle checkpoints: generative 0.2.3 never
    /// applies it.
    #[arg(long)]
    pub attention_output_projection: bool,
    /// Store only the autoencoder's decoder side (drop encoder and quant_conv_* tensors).
    #[arg(long)]
    pub decoder_only: bool,
    /// Where to write the blob (written to a temporary file, then renamed).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    /// MONAI's "BraTS MRI 3D latent diffusion" bundle.
    Bundle,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

impl From<DtypeArg> for DType {
    fn from(d: DtypeArg) -> DType {
        match d {
            DtypeArg::F32 => DType::F32,
            DtypeArg::F16 => DType::F16,
            DtypeArg::Bf16 => DType::BF16,
        }
    }
}

fn parse_latent_shape(s: &str) -> Result<[u32; 4], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 4 {
        return Err(format!(
            "expected 4 comma-separated sizes C,D,H,W, got {}",
            parts.len()
        ));
    }
    let mut out = [0u32; 4];
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = p
            .parse()
            .map_err(|_| format!("`{p}` is not a positive integer"))?;
        if *o == 0 {
            return Err("sizes must be positive".into());
        }
    }
    Ok(out)
}

/// Build the blob's config from the architecture, the networks given and the flags.
fn model_config(args: &ConvertArgs, arch: &Architecture) -> anyhow::Result<ModelConfig> {
    let (mut decoder, mut encoder, mut unet) = (None, None, None);
    if args.autoencoder.is_some() {
        let (Some(d), Some(e)) = (&arch.decoder, &arch.encoder) else {
            bail!("--autoencoder given but the architecture has no autoencoder (add an `autoencoder_def` section)");
        };
        decoder = Some(d.clone());
        if !args.decoder_only {
            encoder = Some(e.clone());
        }
    }
    if args.unet.is_some() {
        let Some(u) = &arch.unet else {
            bail!("--unet given but the architecture has no UNet (add a `network_def` section)");
        };
        let mut u = u.clone();
        u.attention_output_projection |= args.attention_output_projection;
        unet = Some(u);
    }
    if decoder.is_none() && unet.is_none() {
        bail!("nothing to convert: give --autoencoder and/or --unet");
    }
    let latent_c = decoder
        .as_ref()
        .map(|d| d.latent_channels)
        .or(unet.as_ref().map(|u| u.in_channels))
        .unwrap_or(8);
    let latent_shape = args
        .latent_shape
        .or(arch.latent_shape)
        .unwrap_or([latent_c, 36, 44, 28]);
    let scale_factor = args.scale_factor.or(arch.scale_factor).unwrap_or(1.0);
    let mut networks = Vec::new();
    if decoder.is_some() {
        networks.push(if encoder.is_some() {
            "autoencoder"
        } else {
            "autoencoder decoder"
        });
    }
    if unet.is_some() {
        networks.push("diffusion unet");
    }
    let cfg = ModelConfig {
        decoder,
        encoder,
        unet,
        scheduler: arch.scheduler.clone(),
        scale_factor,
        latent_shape,
        geometry: OutputGeometry::bundle(),
        provenance: Provenance {
            producer: format!("brats-ldm {} convert", env!("CARGO_PKG_VERSION")),
            data: format!("converted from MONAI checkpoints: {}", networks.join(", ")),
            steps: 0,
            date: String::new(),
        },
    };
    cfg.validate().context("the architecture is inconsistent")?;
    Ok(cfg)
}

fn convert_one(
    network: Network,
    path: &Path,
    key: Option<&str>,
    cfg: &ModelConfig,
) -> anyhow::Result<Matched> {
    let source = read_checkpoint(path, key)?;
    let n = source.len();
    let mut dtypes: Vec<&str> = source.iter().map(|t| t.source_dtype.name()).collect();
    dtypes.sort_unstable();
    dtypes.dedup();
    // Keeps the report's type in the error chain: main prints it over several lines.
    let matched = match_network(network, source, cfg)
        .map_err(|e| anyhow::Error::new(*e).context(path.display().to_string()))?;
    say!(
        "{}: {} tensors read from {} ({}), {} renamed from monai >= 1.4 names, {} stored",
        network.prefix(),
        n,
        path.display(),
        dtypes.join("+"),
        matched.renamed,
        matched.tensors.len()
    );
    for d in &matched.dropped {
        say!(
            "  dropped {} tensors ({} parameters): {}",
            d.tensors,
            d.parameters,
            d.reason
        );
    }
    Ok(matched)
}

/// f16 overflows past 65504: name the tensor instead of letting the writer find an infinity.
fn check_f16_range(m: &Matched) -> anyhow::Result<()> {
    // Round-to-nearest sends |x| >= 65520 (65504 plus half an ulp) to infinity.
    const F16_OVERFLOW: f32 = 65520.0;
    for t in &m.tensors {
        if let Some(v) = t.data.iter().find(|v| v.abs() >= F16_OVERFLOW) {
            bail!(
                "tensor {} holds {v}, beyond the f16 range (max 65504): use --dtype bf16 or f32",
                t.name
            );
        }
    }
    Ok(())
}

/// Whether `a` and `b` name the same existing file (same device and inode, so symlinks, hard
/// links and `dir/../name` spellings are all caught); false when either does not exist.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
    }
}

/// Refuses an `--out` that is one of the inputs: the blob would replace the checkpoint.
fn check_out_is_not_an_input(args: &ConvertArgs) -> anyhow::Result<()> {
    for (flag, input) in [
        ("--autoencoder", &args.autoencoder),
        ("--unet", &args.unet),
        ("--config", &args.config),
    ] {
        if let Some(input) = input {
            if same_file(&args.out, input) {
                bail!(
                    "--out {} is the same file as {flag} {}: writing the blob would replace it; choose another --out",
                    args.out.display(),
                    input.display()
                );
            }
        }
    }
    Ok(())
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    check_out_is_not_an_input(&args)?;
    let arch = match (&args.config, args.preset) {
        (Some(path), _) => Architecture::from_file(path)?,
        (None, Some(Preset::Bundle)) => Architecture::bundle(),
        (None, None) => bail!("give --config FILE or --preset bundle"),
    };
    let cfg = model_config(&args, &arch)?;
    let dtype = DType::from(args.dtype);
    let mut tensors: Vec<TensorData> = Vec::new();
    for (network, path) in [
        (Network::Autoencoder, &args.autoencoder),
        (Network::Unet, &args.unet),
    ] {
        if let Some(path) = path {
            let matched = convert_one(network, path, args.key.as_deref(), &cfg)?;
            if dtype == DType::F16 {
                check_f16_range(&matched)?;
            }
            tensors.extend(
                matched
                    .tensors
                    .into_iter()
                    .map(|t| TensorData::from_f32(t.name, t.shape, &t.data, dtype)),
            );
        }
    }
    write_blob_file(&args.out, &cfg, &tensors)
        .with_context(|| format!("writing {}", args.out.display()))?;
    drop(tensors);
    let blob =
        Blob::open(&args.out).with_context(|| format!("re-reading {}", args.out.display()))?;
    say!(
        "wrote {}: {} tensors ({}), {} bytes, checksum xxh3-64 {:016x} (verified)",
        args.out.display(),
        blob.tensors().len(),
        dtype.name(),
        blob.file_len(),
        blob.checksum()
    );
    Ok(())
}
