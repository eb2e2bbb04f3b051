//! What the arguments of `Model(...)` and `Model.generate(...)` come to, checked before any
//! work with the CLI's rules and messages (argument names in Python's spelling): device,
//! precision, sampler and eta, step count, latent shape, and integer arguments.
//!
//! The rules mirror `src/cmd/generate.rs` (`parse_device`, `parse_precision`, `choose_sampler`,
//! `check_steps`, `check_latent_shape`), which lives in the CLI binary and cannot be called from
//! here; the tests compare both on the same inputs.

use crate::errors::{Failure, Kind, Result};
use ldm_runtime::{Device, Precision, Sampler};
use ldm_weights::{ModelConfig, SamplerKind};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

/// `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => Ok(Device::Cuda(0)),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Device::Cuda(n)),
            _ => Err(Failure::invalid(format!(
                "unknown device '{s}': use cpu, cuda or cuda:N"
            ))),
        },
    }
}

pub fn parse_precision(s: &str) -> Result<Precision> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(Precision::F32),
        "f16" | "fp16" | "float16" => Ok(Precision::F16),
        "bf16" | "bfloat16" => Ok(Precision::Bf16),
        _ => Err(Failure::invalid(format!(
            "unknown precision '{s}': use f32, f16 or bf16"
        ))),
    }
}

/// The model's default sampler unless `sampler`/`eta` say otherwise.
pub fn choose_sampler(cfg: &ModelConfig, name: Option<&str>, eta: Option<f32>) -> Result<Sampler> {
    let kind = match name.map(|s| s.trim().to_ascii_lowercase()) {
        None => cfg.scheduler.default_sampler,
        Some(s) if s == "ddim" => SamplerKind::Ddim,
        Some(s) if s == "ddpm" => SamplerKind::Ddpm,
        Some(s) if s == "pndm" => SamplerKind::Pndm,
        Some(s) => {
            return Err(Failure::invalid(format!(
                "unknown sampler '{s}': use ddim, ddpm or pndm"
            )))
        }
    };
    match (kind, eta) {
        (SamplerKind::Ddim, eta) => {
            let eta = eta.unwrap_or(0.0);
            if !eta.is_finite() || eta < 0.0 {
                return Err(Failure::invalid(format!(
                    "bad eta {eta}: must be a finite number >= 0"
                )));
            }
            Ok(Sampler::Ddim { eta })
        }
        (SamplerKind::Ddpm, None) => Ok(Sampler::Ddpm),
        (SamplerKind::Pndm, None) => Ok(Sampler::Pndm),
        (SamplerKind::Ddpm | SamplerKind::Pndm, Some(_)) => {
            Err(Failure::invalid("eta applies to the DDIM sampler only"))
        }
    }
}

/// The sampler and step count planned as the runtime will (MONAI's timestep list for any step
/// count, the model's scheduler options): a bad combination is refused before any work.
pub fn check_steps(cfg: &ModelConfig, sampler: Sampler, steps: Option<usize>) -> Result<()> {
    if steps == Some(0) {
        return Err(Failure::invalid("steps must be at least 1"));
    }
    let name = match sampler {
        Sampler::Ddim { .. } => "ddim",
        Sampler::Ddpm => "ddpm",
        Sampler::Pndm => "pndm",
    };
    ldm_runtime::options::sampling_plan(cfg, Some(sampler), steps)
        .map(|_| ())
        .map_err(|e| Failure::invalid(format!("sampler {name} steps: {e}")))
}

/// Channels must match the UNet's input and every spatial size must divide by the UNet's total
/// downsampling.
pub fn check_latent_shape(cfg: &ModelConfig, shape: [usize; 4]) -> Result<()> {
    let Some(unet) = &cfg.unet else {
        return Err(Failure::new(
            Kind::Model,
            "the model has no diffusion UNet, so it cannot generate",
        ));
    };
    if cfg.decoder.is_none() {
        return Err(Failure::new(
            Kind::Model,
            "the model has no decoder, so it cannot generate images",
        ));
    }
    let [c, d, h, w] = shape;
    if c != unet.in_channels as usize {
        return Err(Failure::invalid(format!(
            "latent shape {c},{d},{h},{w} has {c} channels but the model's UNet takes {}",
            unet.in_channels
        )));
    }
    let levels = unet.num_channels.len().max(1);
    let factor = 1usize << (levels - 1).min(20);
    if [d, h, w].iter().any(|&n| n % factor != 0) {
        return Err(Failure::invalid(format!(
            "latent shape {c},{d},{h},{w} is not usable: D, H and W must each be divisible by {factor} \
             (the UNet halves them {} times)",
            levels - 1
        )));
    }
    Ok(())
}

/// An integer argument in `min..=u64::MAX`: a bool or a non-integer is refused, a value out of
/// range is an `InvalidArgument` naming the argument.
pub fn int_arg(name: &str, value: &Bound<'_, PyAny>, min: u64) -> Result<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        let type_name = value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(Failure::invalid(format!(
            "{name} must be an int, got {type_name}"
        )));
    }
    match value.extract::<u64>() {
        Ok(v) if v >= min => Ok(v),
        _ => Err(Failure::invalid(format!(
            "{name} must be an integer in {min}..=18446744073709551615, got {value}"
        ))),
    }
}

/// An optional integer argument that must fit in `usize`.
pub fn opt_usize_arg(
    name: &str,
    value: Option<&Bound<'_, PyAny>>,
    min: u64,
) -> Result<Option<usize>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => {
            if min == 1 && v.is_instance_of::<PyInt>() && v.extract::<i64>().is_ok_and(|n| n < 1) {
                return Err(Failure::invalid(format!("{name} must be at least 1")));
            }
            let n = int_arg(name, v, min)?;
            usize::try_from(n).map(Some).map_err(|_| {
                Failure::invalid(format!(
                    "{name} {n} does not fit this machine's address size"
                ))
            })
        }
    }
}

/// An optional float argument (`eta`): any real number is taken, range checks follow.
pub fn opt_f32_arg(name: &str, value: Option<&Bound<'_, PyAny>>) -> Result<Option<f32>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) if v.is_instance_of::<PyBool>() => Err(Failure::invalid(format!(
            "{name} must be a number, got bool"
        ))),
        Some(v) => v
            .extract::<f64>()
            .map(|x| Some(x as f32))
            .map_err(|_| Failure::invalid(format!("{name} must be a number, got {v}"))),
    }
}
