//! User-facing run options (device, precision, batch, shapes, sampler), the checks that resolve
//! them against a model for every backend, and progress events.

use ldm_weights::{ModelConfig, SamplerKind};

use crate::error::RuntimeError;
use crate::sampler::{self, SamplerPlan};
use crate::schedule::Schedule;

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

pub use crate::sampler::Sampler;

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

/// What `Options` come to for one model: latent shape, noise schedule, and the sampler's plan
/// (its timesteps and per-step coefficients).
pub(crate) struct Resolved {
    pub latent: [usize; 4],
    pub schedule: Schedule,
    pub plan: SamplerPlan,
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
    let plan = plan_with(config, &schedule, opts.sampler, opts.steps)?;
    Ok(Resolved { latent, schedule, plan })
}

/// The sampler's plan for `config` with the given sampler and step count (None: the blob's
/// defaults), or the typed error `Runtime::new` would give: front ends call it to refuse a
/// sampler or step count before any work.
pub fn sampling_plan(config: &ModelConfig, sampler: Option<Sampler>, steps: Option<usize>) -> Result<SamplerPlan, RuntimeError> {
    plan_with(config, &Schedule::new(&config.scheduler)?, sampler, steps)
}

fn plan_with(config: &ModelConfig, schedule: &Schedule, sampler: Option<Sampler>, steps: Option<usize>) -> Result<SamplerPlan, RuntimeError> {
    let sc = &config.scheduler;
    let sampler = sampler.unwrap_or(match sc.default_sampler {
        SamplerKind::Ddim => Sampler::Ddim { eta: 0.0 },
        SamplerKind::Ddpm => Sampler::Ddpm,
        SamplerKind::Pndm => Sampler::Pndm,
    });
    let steps = steps.unwrap_or(default_steps(config, sampler, schedule.num_train_timesteps()));
    sampler::plan(sc, schedule, sampler, steps)
}

/// The blob's default step count, except that DDPM asked of a model whose default sampler is
/// another one walks every training timestep.
pub fn default_steps(config: &ModelConfig, sampler: Sampler, t_train: usize) -> usize {
    let sc = &config.scheduler;
    match sampler {
        Sampler::Ddpm if sc.default_sampler != SamplerKind::Ddpm => t_train,
        _ => sc.default_steps as usize,
    }
}
