//! Conversion: MONAI checkpoints plus an architecture -> one frozen weight blob, verified by
//! reading it back. The CLI's `convert` and the Python package's `brats_ldm.convert` are thin
//! calls of `convert_to_file`.
//!
//! The output depends only on the tensors and the architecture: provenance holds neither the
//! source file names nor a date, so every source of the same weights gives the same bytes.

use std::path::{Path, PathBuf};

use ldm_weights::{
    write_blob_file, Blob, BlobError, ConfigError, DType, ModelConfig, OutputGeometry, Provenance,
    TensorData,
};
use thiserror::Error;

use crate::arch::{ArchError, Architecture};
use crate::assemble::{match_network, Matched, Mismatch, Network};
use crate::bundle::{self, BundleError};
use crate::{read_checkpoint, ImportError};

/// Where the architecture comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchitectureSource {
    /// A JSON file mirroring the bundle's config sections (`autoencoder_def`, `network_def`,
    /// optional `noise_scheduler`, `latent_shape`, `scale_factor`), or a MONAI bundle config
    /// file (`configs/inference.json`) resolved as MONAI does.
    ConfigFile(PathBuf),
    /// The built-in architecture of MONAI's BraTS latent diffusion bundle (8-channel latent,
    /// every release on the model zoo).
    BundlePreset,
    /// The bundle's 4-channel layout (latent 4 x 48 x 48 x 32, UNet [128, 256, 512]).
    BundleLatent4Preset,
    /// A MONAI bundle directory as it ships: its configs give the architecture, its `models/`
    /// the checkpoints (unless `autoencoder` / `unet` are given).
    BundleDir(PathBuf),
}

/// What to convert, and how. `Default` converts nothing (give at least one checkpoint).
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The autoencoder checkpoint (`.pt` zip or `.safetensors`).
    pub autoencoder: Option<PathBuf>,
    /// The diffusion UNet checkpoint.
    pub unet: Option<PathBuf>,
    pub architecture: ArchitectureSource,
    /// Storage type of the blob's tensors.
    pub dtype: DType,
    /// Latents are divided by this before decoding (default: the config's, else 1.0).
    pub scale_factor: Option<f32>,
    /// Default latent shape C,D,H,W (default: the config's, else C x 36 x 44 x 28).
    pub latent_shape: Option<[u32; 4]>,
    /// The entry of a checkpoint that nests its state dict (e.g. `state_dict`); for
    /// safetensors, the tensors named `NAME.*`.
    pub key: Option<String>,
    /// The UNet applies its attention output projection (monai >= 1.4 with include_fc=True).
    pub attention_output_projection: bool,
    /// Store only the autoencoder's decoder side.
    pub decoder_only: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            autoencoder: None,
            unet: None,
            architecture: ArchitectureSource::BundlePreset,
            dtype: DType::F32,
            scale_factor: None,
            latent_shape: None,
            key: None,
            attention_output_projection: false,
            decoder_only: false,
        }
    }
}

/// The blob that was written, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub tensors: usize,
    pub bytes: u64,
    /// XXH3-64 of the blob, verified on the re-read.
    pub checksum: u64,
    pub dtype: DType,
}

/// Everything that can stop a conversion; nothing is written when one is returned.
#[derive(Debug, Error)]
pub enum ConvertError {
    #[error("the output {out} is the same file as the {what} input {input}: writing the blob would replace it; choose another output")]
    OutputIsInput {
        out: String,
        what: &'static str,
        input: String,
    },
    #[error(transparent)]
    Architecture(#[from] ArchError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("the bundle's {network} checkpoint {path} (named by {named_by}) does not exist; give --{flag} FILE")]
    MissingBundleCheckpoint {
        network: &'static str,
        flag: &'static str,
        path: String,
        named_by: String,
    },
    #[error("an autoencoder checkpoint was given but the architecture has no autoencoder (add an `autoencoder_def` section)")]
    NoAutoencoderSection,
    #[error("a UNet checkpoint was given but the architecture has no UNet (add a `network_def` section)")]
    NoUnetSection,
    #[error("nothing to convert: give an autoencoder and/or a UNet checkpoint")]
    NothingToConvert,
    #[error("the architecture is inconsistent: {0}")]
    Inconsistent(#[from] ConfigError),
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The checkpoint's tensors do not fit the architecture; the report lists them one per line
    /// (names from the file already escaped).
    #[error("{path}: {report}")]
    Mismatch { path: String, report: Box<Mismatch> },
    #[error("tensor {tensor} holds {value}, beyond the f16 range (max 65504): use bf16 or f32")]
    F16Range { tensor: String, value: f32 },
    #[error("writing {path}: {cause}")]
    Write { path: String, cause: BlobError },
    #[error("re-reading {path}: {cause}")]
    Reread { path: String, cause: BlobError },
}

impl ConvertError {
    /// Whether the message spans several lines on purpose (a mismatch report).
    pub fn is_multiline_report(&self) -> bool {
        matches!(self, ConvertError::Mismatch { .. })
    }
}

/// Progress lines a conversion reports (tensors read, renamed, dropped); the CLI prints them.
pub type Log<'a> = &'a mut dyn FnMut(&str);

/// Convert the checkpoints in `opts` into a blob at `out` (written to a temporary file, then
/// renamed), read it back and return what it holds.
pub fn convert_to_file(
    opts: &ConvertOptions,
    out: &Path,
    log: Log<'_>,
) -> Result<Converted, ConvertError> {
    let (arch, opts, configs) = resolve_sources(opts, log)?;
    let opts = &opts;
    check_output_is_not_an_input(opts, &configs, out)?;
    let cfg = model_config(opts, &arch)?;
    let mut tensors: Vec<TensorData> = Vec::new();
    for (network, path) in [
        (Network::Autoencoder, &opts.autoencoder),
        (Network::Unet, &opts.unet),
    ] {
        if let Some(path) = path {
            let matched = convert_one(network, path, opts.key.as_deref(), &cfg, log)?;
            if opts.dtype == DType::F16 {
                check_f16_range(&matched)?;
            }
            tensors.extend(
                matched
                    .tensors
                    .into_iter()
                    .map(|t| TensorData::from_f32(t.name, t.shape, &t.data, opts.dtype)),
            );
        }
    }
    let shown = out.display().to_string();
    write_blob_file(out, &cfg, &tensors).map_err(|cause| ConvertError::Write {
        path: shown.clone(),
        cause,
    })?;
    drop(tensors);
    let blob = Blob::open(out).map_err(|cause| ConvertError::Reread { path: shown, cause })?;
    let converted = Converted {
        tensors: blob.tensors().len(),
        bytes: blob.file_len(),
        checksum: blob.checksum(),
        dtype: opts.dtype,
    };
    Ok(converted)
}

/// The architecture, the options with a bundle's checkpoints filled in where none were given,
/// and the config files read. A bundle's notes (where values came from, what was ignored) go
/// to `log`.
fn resolve_sources(
    opts: &ConvertOptions,
    log: Log<'_>,
) -> Result<(Architecture, ConvertOptions, Vec<PathBuf>), ConvertError> {
    let mut opts = opts.clone();
    let given_scale = opts.scale_factor.is_some();
    let source = match &opts.architecture {
        ArchitectureSource::ConfigFile(path) => bundle::read_config_file(path, given_scale)?,
        ArchitectureSource::BundleDir(dir) => bundle::read_bundle_dir(dir, given_scale)?,
        ArchitectureSource::BundlePreset => return Ok((Architecture::bundle(), opts, Vec::new())),
        ArchitectureSource::BundleLatent4Preset => {
            return Ok((Architecture::bundle_latent4(), opts, Vec::new()))
        }
    };
    for n in &source.notes {
        log(n);
    }
    for (network, flag, given, found) in [
        (
            "autoencoder",
            "autoencoder",
            &mut opts.autoencoder,
            &source.autoencoder,
        ),
        ("UNet", "unet", &mut opts.unet, &source.unet),
    ] {
        if given.is_some() {
            continue;
        }
        if let Some(c) = found {
            if !c.path.is_file() {
                return Err(ConvertError::MissingBundleCheckpoint {
                    network,
                    flag,
                    path: c.path.display().to_string(),
                    named_by: c.named_by.clone(),
                });
            }
            log(&format!(
                "{network} checkpoint {} (named by {})",
                c.path.display(),
                c.named_by
            ));
            *given = Some(c.path.clone());
        }
    }
    Ok((source.architecture, opts, source.configs))
}

/// The blob's config from the architecture, the networks given and the options.
pub fn model_config(
    opts: &ConvertOptions,
    arch: &Architecture,
) -> Result<ModelConfig, ConvertError> {
    let (mut decoder, mut encoder, mut unet) = (None, None, None);
    if opts.autoencoder.is_some() {
        let (Some(d), Some(e)) = (&arch.decoder, &arch.encoder) else {
            return Err(ConvertError::NoAutoencoderSection);
        };
        decoder = Some(d.clone());
        if !opts.decoder_only {
            encoder = Some(e.clone());
        }
    }
    if opts.unet.is_some() {
        let Some(u) = &arch.unet else {
            return Err(ConvertError::NoUnetSection);
        };
        let mut u = u.clone();
        u.attention_output_projection |= opts.attention_output_projection;
        unet = Some(u);
    }
    if decoder.is_none() && unet.is_none() {
        return Err(ConvertError::NothingToConvert);
    }
    let latent_c = decoder
        .as_ref()
        .map(|d| d.latent_channels)
        .or(unet.as_ref().map(|u| u.in_channels))
        .unwrap_or(8);
    let latent_shape = opts
        .latent_shape
        .or(arch.latent_shape)
        .unwrap_or([latent_c, 36, 44, 28]);
    let scale_factor = opts.scale_factor.or(arch.scale_factor).unwrap_or(1.0);
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
    cfg.validate()?;
    Ok(cfg)
}

fn convert_one(
    network: Network,
    path: &Path,
    key: Option<&str>,
    cfg: &ModelConfig,
    log: Log<'_>,
) -> Result<Matched, ConvertError> {
    let source = read_checkpoint(path, key)?;
    let n = source.len();
    let mut dtypes: Vec<&str> = source.iter().map(|t| t.source_dtype.name()).collect();
    dtypes.sort_unstable();
    dtypes.dedup();
    let matched = match_network(network, source, cfg).map_err(|report| ConvertError::Mismatch {
        path: path.display().to_string(),
        report,
    })?;
    log(&format!(
        "{}: {} tensors read from {} ({}), {} renamed from monai >= 1.4 names, {} stored",
        network.prefix(),
        n,
        path.display(),
        dtypes.join("+"),
        matched.renamed,
        matched.tensors.len()
    ));
    for d in &matched.dropped {
        log(&format!(
            "  dropped {} tensors ({} parameters): {}",
            d.tensors, d.parameters, d.reason
        ));
    }
    Ok(matched)
}

/// f16 overflows past 65504: name the tensor instead of letting the writer find an infinity.
fn check_f16_range(m: &Matched) -> Result<(), ConvertError> {
    // Round-to-nearest sends |x| >= 65520 (65504 plus half an ulp) to infinity.
    const F16_OVERFLOW: f32 = 65520.0;
    for t in &m.tensors {
        if let Some(v) = t.data.iter().find(|v| v.abs() >= F16_OVERFLOW) {
            return Err(ConvertError::F16Range {
                tensor: t.name.clone(),
                value: *v,
            });
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

/// Refuses an output that is one of the inputs: the blob would replace the checkpoint.
fn check_output_is_not_an_input(
    opts: &ConvertOptions,
    configs: &[PathBuf],
    out: &Path,
) -> Result<(), ConvertError> {
    let networks = [("autoencoder", &opts.autoencoder), ("UNet", &opts.unet)];
    let configs = configs.iter().map(|c| ("config", c));
    for (what, input) in networks
        .into_iter()
        .filter_map(|(w, p)| p.as_ref().map(|p| (w, p)))
        .chain(configs)
    {
        if same_file(out, input) {
            return Err(ConvertError::OutputIsInput {
                out: out.display().to_string(),
                what,
                input: input.display().to_string(),
            });
        }
    }
    Ok(())
}
