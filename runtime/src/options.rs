//! User-facing run options (device, precision, batch, shapes, sampler), the checks that resolve
//! them against a model for every backend, and progress events.

use ldm_weights::{ModelConfig, SamplerKind};

use crate::error::RuntimeError;
use crate::schedule::{ddim_timesteps, Schedule};

/// Where the computation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// CUDA device ordinal. Needs a build with feature `cuda` and a usable GPU; otherwise
    /// `Runtime::new` returns `DeviceUnavailable` saying which of the two is missing.
    Cuda(usize),
}

/// Arithmetic precision. The CPU backend computes in f32 only; the CUDA backend also keeps
/// activations and convolution weights in f16 or bf16 (fp32 accumulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

/// The sampler that turns noise into a latent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// DDIM with stochasticity `eta` (0 = deterministic, the bundle's default).
    Ddim { eta: f32 },
    /// Ancestral DDPM over every training timestep (x0 clipped as configured in the blob).
    Ddpm,
}

impl Sampler {
    /// Whether it draws fresh noise at each step (DDPM, DDIM with eta > 0), so that the initial
    /// noise alone does not decide the result.
    pub fn is_stochastic(self) -> bool {
        match self {
            Sampler::Ddim { eta } => eta != 0.0,
            Sampler::Ddpm => true,
        }
    }
}

/// Options of `Runtime::new`.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub device: Device,
    pub precision: Precision,
    /// Volumes generated per `generate` call (run one after another through the same plan).
    pub batch: usize,
    /// Latent shape [C, D, H, W]; None = the blob's default.
    pub latent_shape: Option<[usize; 4]>,
    /// Sampling steps; None = the blob's default.
    pub steps: Option<usize>,
    /// Sampler; None = the blob's default (DDIM eta 0 or DDPM).
    pub sampler: Option<Sampler>,
    /// Worker threads of the CPU backend; None = available parallelism (the CUDA backend has
    /// no worker pool and only checks that this is not 0).
    pub threads: Option<usize>,
    /// Upper bound in bytes for the activation arena plus workspaces (weights excluded). The CPU
    /// backend decodes in slabs to fit; the CUDA backend fails with `MemoryLimit` instead.
    pub max_memory: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            device: Device::Cpu,
            precision: Precision::F32,
            batch: 1,
            latent_shape: None,
            steps: None,
            sampler: None,
            threads: None,
            max_memory: None,
        }
    }
}

/// Progress events reported by `generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Step { index: usize, total: usize, timestep: u32 },
    Decoding,
}

/// What `Options` come to for one model: latent shape, noise schedule, sampler and its timesteps
/// (descending).
pub(crate) struct Resolved {
    pub latent: [usize; 4],
    pub schedule: Schedule,
    pub sampler: Sampler,
    pub timesteps: Vec<u32>,
}

/// Checks `opts` against `config` the same way for every backend, so all report the same typed
/// errors in the same order: the configuration, the precision (the backend computes in
/// `precisions`), batch, threads, scale factor, latent shape, sampler and step count.
pub(crate) fn resolve(config: &ModelConfig, opts: &Options, precisions: &[Precision]) -> Result<Resolved, RuntimeError> {
    config.validate().map_err(|e| RuntimeError::InvalidConfig(e.to_string()))?;
    if !precisions.contains(&opts.precision) {
        return Err(RuntimeError::UnsupportedPrecision(format!("{:?}", opts.precision).to_lowercase()));
    }
    if opts.batch == 0 || opts.batch > 1 << 20 {
        return Err(RuntimeError::InvalidOption(format!("batch {} must be in 1..=2^20", opts.batch)));
    }
    if opts.threads == Some(0) {
        return Err(RuntimeError::InvalidOption("threads must be at least 1".into()));
    }
    if !(config.scale_factor.is_finite() && config.scale_factor != 0.0) {
        return Err(RuntimeError::InvalidConfig(format!("scale factor {} must be finite and non-zero", config.scale_factor)));
    }
    let latent = opts.latent_shape.unwrap_or(config.latent_shape.map(|v| v as usize));
    if latent.iter().any(|&v| v == 0 || v > 1 << 16) {
        return Err(RuntimeError::InvalidOption(format!("latent shape {latent:?} has a zero or huge dimension")));
    }
    let schedule = Schedule::new(&config.scheduler)?;
    let t_train = schedule.num_train_timesteps();
    let sampler = opts.sampler.unwrap_or(match config.scheduler.default_sampler {
        SamplerKind::Ddim => Sampler::Ddim { eta: 0.0 },
        SamplerKind::Ddpm => Sampler::Ddpm,
    });
    let timesteps = match sampler {
        Sampler::Ddim { eta } => {
            if !(eta.is_finite() && eta >= 0.0) {
                return Err(RuntimeError::InvalidOption(format!("DDIM eta {eta} must be finite and >= 0")));
            }
            ddim_timesteps(t_train, opts.steps.unwrap_or(config.scheduler.default_steps as usize))?
        }
        Sampler::Ddpm => {
            let n = opts.steps.unwrap_or(t_train);
            if n != t_train {
                return Err(RuntimeError::InvalidOption(format!("DDPM runs every training timestep: steps must be {t_train}, got {n}")));
            }
            (0..t_train as u32).rev().collect()
        }
    };
    Ok(Resolved { latent, schedule, sampler, timesteps })
}
