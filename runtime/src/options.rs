//! User-facing run options (device, precision, batch, shapes, sampler) and progress events.

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
