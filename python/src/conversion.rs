//! `brats_ldm.convert(...)`: MONAI checkpoints -> a weight blob through
//! `ldm_import::convert::convert_to_file`, the code behind `brats-ldm convert`, with the same
//! checks and messages; the lines the CLI prints come back in the result.

use std::path::PathBuf;

use ldm_import::convert::{convert_to_file, ArchitectureSource, ConvertError, ConvertOptions};
use ldm_weights::DType;

use ldm_io::escape::chain_text;

use crate::errors::{Failure, Kind, Result};

/// `convert`'s arguments, as Python passed them.
pub struct Request {
    pub out: PathBuf,
    pub autoencoder: Option<PathBuf>,
    pub unet: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub bundle: Option<PathBuf>,
    pub preset: Option<String>,
    pub dtype: String,
    pub scale_factor: Option<f32>,
    pub latent_shape: Option<Vec<i64>>,
    pub key: Option<String>,
    pub attention_output_projection: bool,
    pub decoder_only: bool,
}

/// What was written: the blob as read back, and the progress lines.
pub struct Outcome {
    pub tensors: usize,
    pub bytes: u64,
    pub checksum: u64,
    pub dtype: DType,
    pub log: Vec<String>,
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        "f16" | "fp16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(Failure::invalid(format!(
            "unknown dtype '{s}': use f32, f16 or bf16"
        ))),
    }
}

fn options(req: Request) -> Result<ConvertOptions> {
    let given = [req.config.is_some(), req.bundle.is_some(), req.preset.is_some()];
    if given.iter().filter(|&&g| g).count() > 1 {
        return Err(Failure::invalid("give one of bundle, config or preset"));
    }
    let architecture = match (req.bundle, req.config, req.preset.as_deref().map(str::trim)) {
        (Some(dir), _, _) => ArchitectureSource::BundleDir(dir),
        (_, Some(path), _) => ArchitectureSource::ConfigFile(path),
        (_, _, Some("bundle")) => ArchitectureSource::BundlePreset,
        (_, _, Some("bundle-latent4")) => ArchitectureSource::BundleLatent4Preset,
        (_, _, Some(other)) => {
            return Err(Failure::invalid(format!(
                "unknown preset '{other}': the built-in architectures are 'bundle' and 'bundle-latent4'"
            )))
        }
        (None, None, None) => {
            return Err(Failure::invalid(
                "give bundle=DIR, config=FILE or preset='bundle'",
            ))
        }
    };
    let latent_shape = match req.latent_shape {
        None => None,
        Some(v) => {
            let shape: Vec<u32> = v
                .iter()
                .map(|&x| u32::try_from(x).ok().filter(|&x| x > 0))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Failure::invalid(format!(
                        "latent_shape {v:?}: sizes must be positive integers below 2^32"
                    ))
                })?;
            let shape: [u32; 4] = shape.try_into().map_err(|_| {
                Failure::invalid(format!("latent_shape {v:?}: expected 4 sizes (C, D, H, W)"))
            })?;
            Some(shape)
        }
    };
    if let Some(s) = req.scale_factor {
        if !s.is_finite() || s <= 0.0 {
            return Err(Failure::invalid(format!(
                "scale_factor {s}: must be a finite number > 0"
            )));
        }
    }
    Ok(ConvertOptions {
        autoencoder: req.autoencoder,
        unet: req.unet,
        architecture,
        dtype: parse_dtype(&req.dtype)?,
        scale_factor: req.scale_factor,
        latent_shape,
        key: req.key,
        attention_output_projection: req.attention_output_projection,
        decoder_only: req.decoder_only,
    })
}

/// The exception class a conversion error raises.
fn kind(e: &ConvertError) -> Kind {
    match e {
        ConvertError::OutputIsInput { .. } | ConvertError::NothingToConvert => {
            Kind::InvalidArgument
        }
        ConvertError::Write { .. } | ConvertError::Reread { .. } => Kind::Output,
        _ => Kind::Checkpoint,
    }
}

/// Runs the conversion (call without the GIL).
pub fn run(req: Request) -> Result<Outcome> {
    let out = req.out.clone();
    let opts = options(req)?;
    let mut log = Vec::new();
    let done = convert_to_file(&opts, &out, &mut |line| log.push(line.to_string()))
        .map_err(|e| Failure::new(kind(&e), chain_text(&e)))?;
    Ok(Outcome {
        tensors: done.tensors,
        bytes: done.bytes,
        checksum: done.checksum,
        dtype: done.dtype,
        log,
    })
}
