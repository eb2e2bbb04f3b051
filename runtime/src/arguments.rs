//! The front ends' argument rules, shared by the CLI (`generate`, `bench`), the Python package and
//! the C ABI so that each rule and its message exist once: device and precision names, the sampler
//! with its eta, the step count, and a latent shape against the model. Messages name an argument
//! in the caller's spelling (`Spelling::Cli`: `--steps`; `Spelling::Python`: `steps`;
//! `Spelling::C`: `options.steps`).

use ldm_weights::{ModelConfig, SamplerKind};
use thiserror::Error;

use crate::options::{self, Device, Precision, Sampler};

/// How the front end spells its arguments in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// Command-line flags: `--latent-shape`.
    Cli,
    /// Python keyword arguments: `latent_shape`.
    Python,
    /// Fields of the C ABI's `brats_ldm_options`: `options.latent_shape`.
    C,
}

impl Spelling {
    /// The argument `name` (dash-separated words) as this front end spells it.
    pub fn arg(self, name: &str) -> String {
        match self {
            Spelling::Cli => format!("--{name}"),
            Spelling::Python => name.replace('-', "_"),
            Spelling::C => format!("options.{}", name.replace('-', "_")),
        }
    }
}

/// An argument refused before any work, with its one-line message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArgumentError {
    /// The value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The model cannot do what was asked at all (it lacks a network).
    #[error("{0}")]
    Model(String),
}

/// `cpu`, `cuda` (or `gpu`), `cuda:N`.
pub fn parse_device(s: &str, sp: Spelling) -> Result<Device, ArgumentError> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => Ok(Device::Cuda(0)),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Device::Cuda(n)),
            _ => Err(ArgumentError::Invalid(format!("unknown {} '{s}': use cpu, cuda or cuda:N", sp.arg("device")))),
        },
    }
}

/// The spelling `parse_device` reads back: `cpu` or `cuda:N`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
    }
}

/// `f32`, `f16` or `bf16` (and their long names).
pub fn parse_precision(s: &str, sp: Spelling) -> Result<Precision, ArgumentError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(Precision::F32),
        "f16" | "fp16" | "float16" => Ok(Precision::F16),
        "bf16" | "bfloat16" => Ok(Precision::Bf16),
        _ => Err(ArgumentError::Invalid(format!("unknown {} '{s}': use f32, f16 or bf16", sp.arg("precision")))),
    }
}

/// `ddim`, `ddpm` or `pndm`: the name `choose_sampler` reads.
pub fn sampler_name(s: Sampler) -> &'static str {
    match s {
        Sampler::Ddim { .. } => "ddim",
        Sampler::Ddpm => "ddpm",
        Sampler::Pndm => "pndm",
    }
}

/// The model's default sampler unless `name`/`eta` say otherwise; eta applies to DDIM only.
pub fn choose_sampler(cfg: &ModelConfig, name: Option<&str>, eta: Option<f32>, sp: Spelling) -> Result<Sampler, ArgumentError> {
    let kind = match name.map(|s| s.trim().to_ascii_lowercase()) {
        None => cfg.scheduler.default_sampler,
        Some(s) if s == "ddim" => SamplerKind::Ddim,
        Some(s) if s == "ddpm" => SamplerKind::Ddpm,
        Some(s) if s == "pndm" => SamplerKind::Pndm,
        Some(s) => return Err(ArgumentError::Invalid(format!("unknown {} '{s}': use ddim, ddpm or pndm", sp.arg("sampler")))),
    };
    sampler_of(kind, eta, sp)
}

/// The sampler `kind`; `eta` (None: 0) applies to DDIM only and must be finite and >= 0.
pub fn sampler_of(kind: SamplerKind, eta: Option<f32>, sp: Spelling) -> Result<Sampler, ArgumentError> {
    match (kind, eta) {
        (SamplerKind::Ddim, eta) => {
            let eta = eta.unwrap_or(0.0);
            if !eta.is_finite() || eta < 0.0 {
                return Err(ArgumentError::Invalid(format!("bad {} {eta}: must be a finite number >= 0", sp.arg("eta"))));
            }
            Ok(Sampler::Ddim { eta })
        }
        (SamplerKind::Ddpm, None) => Ok(Sampler::Ddpm),
        (SamplerKind::Pndm, None) => Ok(Sampler::Pndm),
        (SamplerKind::Ddpm | SamplerKind::Pndm, Some(_)) => Err(eta_without_ddim(sp)),
    }
}

/// The refusal of an eta given for a sampler other than DDIM.
pub fn eta_without_ddim(sp: Spelling) -> ArgumentError {
    ArgumentError::Invalid(format!("{} applies to the DDIM sampler only", sp.arg("eta")))
}

/// A step count, when given, is at least 1 (checked without the model).
pub fn check_step_count(steps: Option<usize>, sp: Spelling) -> Result<(), ArgumentError> {
    if steps == Some(0) {
        return Err(ArgumentError::Invalid(format!("{} must be at least 1", sp.arg("steps"))));
    }
    Ok(())
}

/// The sampler and step count planned as the runtime will (MONAI's timestep list for any step
/// count, the model's scheduler options), so that a bad combination is refused before any work.
pub fn check_steps(cfg: &ModelConfig, sampler: Sampler, steps: Option<usize>, sp: Spelling) -> Result<(), ArgumentError> {
    check_step_count(steps, sp)?;
    options::sampling_plan(cfg, Some(sampler), steps)
        .map(|_| ())
        .map_err(|e| ArgumentError::Invalid(format!("{} {} {}: {e}", sp.arg("sampler"), sampler_name(sampler), sp.arg("steps"))))
}

/// A latent shape `[C, D, H, W]` against the model: it must have a UNet and a decoder, the
/// channels must match the UNet's input, and every spatial size must divide by the UNet's total
/// downsampling.
pub fn check_latent_shape(cfg: &ModelConfig, shape: [usize; 4]) -> Result<(), ArgumentError> {
    let Some(unet) = &cfg.unet else {
        return Err(ArgumentError::Model("the model has no diffusion UNet, so it cannot generate".into()));
    };
    if cfg.decoder.is_none() {
        return Err(ArgumentError::Model("the model has no decoder, so it cannot generate images".into()));
    }
    let [c, d, h, w] = shape;
    if c != unet.in_channels as usize {
        return Err(ArgumentError::Invalid(format!(
            "latent shape {c},{d},{h},{w} has {c} channels but the model's UNet takes {}",
            unet.in_channels
        )));
    }
    let levels = unet.num_channels.len().max(1);
    let factor = 1usize << (levels - 1).min(20);
    if [d, h, w].iter().any(|&n| n % factor != 0) {
        return Err(ArgumentError::Invalid(format!(
            "latent shape {c},{d},{h},{w} is not usable: D, H and W must each be divisible by {factor} \
             (the UNet halves them {} times)",
            levels - 1
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_config() -> ModelConfig {
        ModelConfig {
            decoder: Some(ldm_weights::DecoderConfig::bundle()),
            encoder: None,
            unet: Some(ldm_weights::UnetConfig::bundle()),
            scheduler: ldm_weights::SchedulerConfig::bundle(),
            scale_factor: 1.0,
            latent_shape: [8, 36, 44, 28],
            geometry: ldm_weights::OutputGeometry::bundle(),
            provenance: Default::default(),
        }
    }

    #[test]
    fn devices_and_precisions_parse_in_either_spelling() {
        for sp in [Spelling::Cli, Spelling::Python] {
            assert_eq!(parse_device("cpu", sp).unwrap(), Device::Cpu);
            assert_eq!(parse_device("CUDA", sp).unwrap(), Device::Cuda(0));
            assert_eq!(parse_device("cuda:3", sp).unwrap(), Device::Cuda(3));
            assert_eq!(parse_device(&device_name(Device::Cuda(3)), sp).unwrap(), Device::Cuda(3));
            assert!(parse_device("cuda:x", sp).is_err());
            assert_eq!(parse_precision("bf16", sp).unwrap(), Precision::Bf16);
        }
        let e = parse_device("tpu", Spelling::Cli).unwrap_err().to_string();
        assert_eq!(e, "unknown --device 'tpu': use cpu, cuda or cuda:N");
        let e = parse_precision("f64", Spelling::Python).unwrap_err().to_string();
        assert_eq!(e, "unknown precision 'f64': use f32, f16 or bf16");
        assert_eq!(Spelling::Python.arg("latent-shape"), "latent_shape");
        assert_eq!(Spelling::Cli.arg("latent-shape"), "--latent-shape");
    }

    #[test]
    fn latent_shapes_are_checked_against_the_unet() {
        let cfg = bundle_config();
        assert!(check_latent_shape(&cfg, [8, 36, 44, 28]).is_ok());
        let e = check_latent_shape(&cfg, [8, 35, 44, 28]).unwrap_err();
        assert!(matches!(&e, ArgumentError::Invalid(m) if m.contains("divisible by 4")), "{e:?}");
        let e = check_latent_shape(&cfg, [4, 36, 44, 28]).unwrap_err();
        assert!(matches!(&e, ArgumentError::Invalid(m) if m.contains("channels")), "{e:?}");
        let mut no_unet = cfg.clone();
        no_unet.unet = None;
        assert!(matches!(check_latent_shape(&no_unet, [8, 36, 44, 28]), Err(ArgumentError::Model(_))));
        let mut no_decoder = cfg;
        no_decoder.decoder = None;
        assert!(matches!(check_latent_shape(&no_decoder, [8, 36, 44, 28]), Err(ArgumentError::Model(_))));
    }

    #[test]
    fn sampler_defaults_and_conflicts() {
        let cfg = bundle_config();
        let cli = Spelling::Cli;
        assert_eq!(choose_sampler(&cfg, None, None, cli).unwrap(), Sampler::Ddim { eta: 0.0 });
        assert_eq!(choose_sampler(&cfg, Some("ddim"), Some(0.5), cli).unwrap(), Sampler::Ddim { eta: 0.5 });
        assert_eq!(choose_sampler(&cfg, Some("DDPM"), None, cli).unwrap(), Sampler::Ddpm);
        assert_eq!(choose_sampler(&cfg, Some("pndm"), None, cli).unwrap(), Sampler::Pndm);
        // Each name reads back as its sampler (DDIM with the default eta 0).
        for s in [Sampler::Ddim { eta: 0.0 }, Sampler::Ddpm, Sampler::Pndm] {
            assert_eq!(choose_sampler(&cfg, Some(sampler_name(s)), None, cli).unwrap(), s);
        }
        assert!(choose_sampler(&cfg, Some("ddpm"), Some(0.5), cli).is_err());
        assert!(choose_sampler(&cfg, Some("pndm"), Some(0.5), cli).is_err());
        assert!(choose_sampler(&cfg, Some("euler"), None, cli).is_err());
        assert!(choose_sampler(&cfg, None, Some(-1.0), cli).is_err());
        let e = choose_sampler(&cfg, None, Some(f32::NAN), Spelling::Python).unwrap_err().to_string();
        assert_eq!(e, "bad eta NaN: must be a finite number >= 0");
        let e = choose_sampler(&cfg, Some("ddpm"), Some(0.5), cli).unwrap_err().to_string();
        assert_eq!(e, "--eta applies to the DDIM sampler only");
    }

    #[test]
    fn step_counts_are_planned_as_the_runtime_will() {
        let cfg = bundle_config();
        let cli = Spelling::Cli;
        assert!(check_steps(&cfg, Sampler::Ddpm, Some(10), cli).is_ok(), "MONAI's DDPM takes any step count");
        assert!(check_steps(&cfg, Sampler::Ddpm, Some(1001), cli).is_err());
        assert!(check_steps(&cfg, Sampler::Pndm, Some(3), cli).is_err(), "the Runge-Kutta warm-up needs 4 steps");
        assert!(check_steps(&cfg, Sampler::Ddpm, Some(1000), cli).is_ok());
        assert!(check_steps(&cfg, Sampler::Ddpm, None, cli).is_ok());
        assert!(check_steps(&cfg, Sampler::Ddim { eta: 0.0 }, Some(10), cli).is_ok());
        let e = check_steps(&cfg, Sampler::Ddim { eta: 0.0 }, Some(0), Spelling::Python).unwrap_err().to_string();
        assert_eq!(e, "steps must be at least 1");
        let e = check_steps(&cfg, Sampler::Pndm, Some(3), cli).unwrap_err().to_string();
        assert!(e.starts_with("--sampler pndm --steps: "), "{e}");
        let e = check_steps(&cfg, Sampler::Pndm, Some(3), Spelling::Python).unwrap_err().to_string();
        assert!(e.starts_with("sampler pndm steps: "), "{e}");
    }
}
