//! `Runtime`: the public API, one for every backend. `Options::device` picks the backend at
//! construction (the CPU one in `cpu.rs`, the CUDA one in `cuda/` when built with feature
//! `cuda`); the options are resolved against the model once here (`options::resolve`), every
//! call's input is checked here (`inputs.rs`) before it is dispatched, so each backend takes
//! checked input; an operation a backend lacks is a typed `RuntimeError::Unsupported`, never a
//! panic.

use crate::cpu::{CpuPlan, CpuRuntime};
use crate::error::RuntimeError;
use crate::inputs::Inputs;
use crate::options::{self, Device, Options, Precision, Progress};
use crate::plan::PlanReport;
use crate::schedule::Schedule;
use crate::weights::{WeightSource, WeightStore};
use ldm_weights::{Blob, ModelConfig, OutputGeometry};

/// A runtime whose plan is known and whose large buffers are not yet allocated (CPU backend):
/// `report` says what `allocate` will take.
pub struct Planned {
    inner: PlannedBackend,
    /// Volumes per `generate` call.
    batch: usize,
}

enum PlannedBackend {
    Cpu(Box<CpuPlan>),
    /// A backend that plans and allocates in one step (CUDA).
    Ready(Backend),
}

impl Planned {
    /// The plan's bytes: weights (already packed), arena, workspaces and sampler state.
    pub fn report(&self) -> &PlanReport {
        match &self.inner {
            PlannedBackend::Cpu(p) => p.report(),
            PlannedBackend::Ready(b) => Runtime::backend_report(b),
        }
    }
    /// Shape `[C, D, H, W]` of one generated volume.
    pub fn output_shape(&self) -> [usize; 4] {
        match &self.inner {
            PlannedBackend::Cpu(p) => p.output_shape(),
            PlannedBackend::Ready(b) => Runtime::backend_output_shape(b),
        }
    }
    /// Allocates what the plan reports and returns the runtime, or a typed error
    /// (`OutOfMemory` names the buffer and its bytes) when the system refuses.
    pub fn allocate(self) -> Result<Runtime, RuntimeError> {
        let backend = match self.inner {
            PlannedBackend::Cpu(p) => Backend::Cpu(Box::new(p.allocate()?)),
            PlannedBackend::Ready(b) => b,
        };
        Ok(Runtime { backend, batch: self.batch })
    }
}

/// Loads a model once, then samples, runs the UNet and decodes on the chosen device.
pub struct Runtime {
    backend: Backend,
    /// Volumes per `generate` call.
    batch: usize,
}

enum Backend {
    Cpu(Box<CpuRuntime>),
    #[cfg(feature = "cuda")]
    Cuda(Box<cuda_backend::CudaBackend>),
}

impl Runtime {
    /// Builds a runtime from a validated blob: plans every buffer, reports the plan, then
    /// allocates the arena and workspaces once.
    pub fn new(blob: &Blob, opts: Options) -> Result<Runtime, RuntimeError> {
        Runtime::from_source(blob.config(), blob, opts)
    }

    /// Builds a runtime from a model configuration and its tensors (names as in the blob).
    pub fn from_store(config: &ModelConfig, store: &WeightStore, opts: Options) -> Result<Runtime, RuntimeError> {
        Runtime::from_source(config, store, opts)
    }

    /// Builds a runtime taking tensors from any `WeightSource`, on `opts.device`.
    pub fn from_source(config: &ModelConfig, store: &dyn WeightSource, opts: Options) -> Result<Runtime, RuntimeError> {
        Runtime::plan_source(config, store, opts)?.allocate()
    }

    /// Plans a runtime without allocating its arena, workspaces or sampler state, so that a
    /// caller can show `Planned::report` and decide whether it fits before `Planned::allocate`.
    /// The CPU backend has packed the weights at this point (`weights_bytes`); the CUDA backend
    /// plans and allocates device memory in one go, so its `Planned` is already allocated.
    pub fn plan_for(blob: &Blob, opts: Options) -> Result<Planned, RuntimeError> {
        Runtime::plan_source(blob.config(), blob, opts)
    }

    /// `plan_for` over any `WeightSource`.
    pub fn plan_source(config: &ModelConfig, store: &dyn WeightSource, opts: Options) -> Result<Planned, RuntimeError> {
        let inner = match opts.device {
            Device::Cpu => {
                // The CPU backend computes in f32 only.
                let resolved = options::resolve(config, &opts, &[Precision::F32])?;
                PlannedBackend::Cpu(Box::new(CpuPlan::new(config, store, &opts, resolved)?))
            }
            Device::Cuda(ordinal) => PlannedBackend::Ready(cuda_backend::open(config, store, &opts, ordinal)?),
        };
        Ok(Planned { inner, batch: opts.batch })
    }

    /// The device this runtime computes on.
    pub fn device(&self) -> Device {
        match &self.backend {
            Backend::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => Device::Cuda(c.ordinal),
        }
    }

    pub fn plan(&self) -> &PlanReport {
        Runtime::backend_report(&self.backend)
    }
    /// What each call's buffers must hold, for the checks before dispatch.
    fn inputs(&self) -> Inputs {
        Inputs::new(self.config(), self.latent_shape(), self.output_shape(), self.batch)
    }
    fn backend_report(backend: &Backend) -> &PlanReport {
        match backend {
            Backend::Cpu(r) => r.plan(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.rt.report(),
        }
    }
    pub fn output_shape(&self) -> [usize; 4] {
        Runtime::backend_output_shape(&self.backend)
    }
    fn backend_output_shape(backend: &Backend) -> [usize; 4] {
        match backend {
            Backend::Cpu(r) => r.output_shape(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.rt.output_shape(),
        }
    }
    pub fn latent_shape(&self) -> [usize; 4] {
        match &self.backend {
            Backend::Cpu(r) => r.latent_shape(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.rt.latent_shape(),
        }
    }
    pub fn geometry(&self) -> &OutputGeometry {
        &self.config().geometry
    }
    pub fn timesteps(&self) -> &[u32] {
        match &self.backend {
            Backend::Cpu(r) => r.timesteps(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.rt.timesteps(),
        }
    }
    pub fn config(&self) -> &ModelConfig {
        match &self.backend {
            Backend::Cpu(r) => r.config(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.rt.config(),
        }
    }
    pub fn flops_per_unet_step(&self) -> f64 {
        match &self.backend {
            Backend::Cpu(r) => r.flops_per_unet_step(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.rt.flops_per_unet_step(),
        }
    }
    pub fn flops_per_decode(&self) -> f64 {
        match &self.backend {
            Backend::Cpu(r) => r.flops_per_decode(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.rt.flops_per_decode(),
        }
    }
    /// The training schedule (betas, alphas, cumulative products).
    pub fn schedule(&self) -> &Schedule {
        match &self.backend {
            Backend::Cpu(r) => r.schedule(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => &c.schedule,
        }
    }

    /// One UNet evaluation: `eps_out = unet(x, t)`.
    pub fn unet_forward(&mut self, x: &[f32], t: u32, eps_out: &mut [f32]) -> Result<(), RuntimeError> {
        self.inputs().unet_forward(x.len(), eps_out.len())?;
        match &mut self.backend {
            Backend::Cpu(r) => {
                r.unet_forward(x, t, eps_out);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.unet_forward(x, t, eps_out),
        }
    }

    /// Decodes one latent (divided by the blob's scale factor first) into `out`.
    pub fn decode(&mut self, latent: &[f32], out: &mut [f32]) -> Result<(), RuntimeError> {
        self.inputs().decode(latent.len(), out.len())?;
        match &mut self.backend {
            Backend::Cpu(r) => {
                r.decode(latent, out);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.decode(latent, out),
        }
    }

    /// Generates `batch` volumes from `seed`. Volume `b` uses the Philox stream of `seed` from
    /// offset `b * 2^40`: its initial noise is elements `[0, n)`, the noise of step `s`
    /// (stochastic samplers) elements `[(s + 1) n, (s + 2) n)`, with `n` the latent size.
    pub fn generate(&mut self, seed: u64, out: &mut [f32], progress: &mut dyn FnMut(Progress)) -> Result<(), RuntimeError> {
        self.inputs().generate(out.len(), None)?;
        match &mut self.backend {
            Backend::Cpu(r) => {
                r.generate(seed, out, progress);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.generate(seed, None, out, progress),
        }
    }

    /// Like `generate` but starts from the given initial noise (`batch` latents); stochastic
    /// samplers draw their step noise from seed 0.
    pub fn generate_from_noise(&mut self, noise: &[f32], out: &mut [f32], progress: &mut dyn FnMut(Progress)) -> Result<(), RuntimeError> {
        self.generate_from_noise_seeded(noise, 0, out, progress)
    }

    /// `generate_from_noise` with the step-noise seed given.
    pub fn generate_from_noise_seeded(
        &mut self,
        noise: &[f32],
        seed: u64,
        out: &mut [f32],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), RuntimeError> {
        self.inputs().generate(out.len(), Some(noise.len()))?;
        match &mut self.backend {
            Backend::Cpu(r) => {
                r.generate_from_noise_seeded(noise, seed, out, progress);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.generate(seed, Some(noise), out, progress),
        }
    }

    /// Runs only the sampler from `noise`, leaving the latent after `steps` steps (all when None)
    /// in `latent_out` (no decoding, no scale factor). CPU backend only.
    pub fn sample_latent(&mut self, noise: &[f32], seed: u64, steps: Option<usize>, latent_out: &mut [f32]) -> Result<(), RuntimeError> {
        let inputs = self.inputs();
        match &mut self.backend {
            Backend::Cpu(r) => {
                inputs.sample_latent(noise.len(), latent_out.len())?;
                r.sample_latent(noise, seed, steps, latent_out);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => Err(RuntimeError::Unsupported { operation: "sample_latent", backend: "CUDA" }),
        }
    }
}

/// Without the `cuda` feature: asking for a GPU is a clear error saying how to get one.
#[cfg(not(feature = "cuda"))]
mod cuda_backend {
    use super::Backend;
    use crate::error::RuntimeError;
    use crate::options::Options;
    use crate::weights::WeightSource;
    use ldm_weights::ModelConfig;

    /// The build-time hint quoted by the error.
    pub const ENABLE_HINT: &str = "this build of ldm-runtime has no CUDA backend (the CPU backend is the only one compiled in); \
rebuild with the `cuda` feature, e.g. `cargo build --release --features cuda` (needs nvcc: scripts/install-nvcc.sh), \
or use the CPU device";

    pub(super) fn open(_: &ModelConfig, _: &dyn WeightSource, _: &Options, ordinal: usize) -> Result<Backend, RuntimeError> {
        Err(RuntimeError::DeviceUnavailable(format!("cuda:{ordinal}: {ENABLE_HINT}")))
    }
}

/// With the `cuda` feature: the CUDA runtime behind `Runtime`'s checks and error types.
#[cfg(feature = "cuda")]
mod cuda_backend {
    use super::Backend;
    use crate::cuda::{CudaError, CudaRuntime};
    use crate::error::RuntimeError;
    use crate::options::{self, Options, Precision, Progress};
    use crate::schedule::Schedule;
    use crate::weights::WeightSource;
    use ldm_weights::ModelConfig;

    pub(super) struct CudaBackend {
        pub rt: CudaRuntime,
        pub schedule: Schedule,
        pub ordinal: usize,
    }

    /// A CUDA error in the runtime's terms: device problems are `DeviceUnavailable`, a plan over
    /// `max_memory` is `MemoryLimit`, host planning errors keep their own type.
    fn convert(ordinal: usize, e: CudaError) -> RuntimeError {
        match e {
            CudaError::DeviceUnavailable { reason, hint } => RuntimeError::DeviceUnavailable(format!("cuda:{ordinal}: {reason}; {hint}")),
            e @ CudaError::UnsupportedDevice { .. } => RuntimeError::DeviceUnavailable(format!("cuda:{ordinal}: {e}")),
            CudaError::MemoryLimit { needed, limit } => RuntimeError::MemoryLimit { needed, limit },
            CudaError::Plan(e) => match e.downcast::<RuntimeError>() {
                Ok(e) => *e,
                Err(e) => RuntimeError::Cuda(CudaError::Plan(e)),
            },
            e => RuntimeError::Cuda(e),
        }
    }

    pub(super) fn open(config: &ModelConfig, store: &dyn WeightSource, opts: &Options, ordinal: usize) -> Result<Backend, RuntimeError> {
        // The CPU runtime's checks and typed errors; the CUDA backend computes in all three precisions.
        let resolved = options::resolve(config, opts, &[Precision::F32, Precision::F16, Precision::Bf16])?;
        // Fail fast (before seconds of host planning at the bundle's size) when no GPU is usable.
        crate::cuda::check_available(ordinal).map_err(|e| convert(ordinal, e))?;
        let schedule = resolved.schedule.clone();
        let rt = CudaRuntime::from_resolved(config, store, opts, resolved).map_err(|e| convert(ordinal, e))?;
        Ok(Backend::Cuda(Box::new(CudaBackend { rt, schedule, ordinal })))
    }

    /// Each call's input was checked by `Runtime` before it got here.
    impl CudaBackend {
        pub fn unet_forward(&mut self, x: &[f32], t: u32, eps_out: &mut [f32]) -> Result<(), RuntimeError> {
            self.rt.run_unet(x, t, eps_out).map_err(|e| convert(self.ordinal, e))
        }

        pub fn decode(&mut self, latent: &[f32], out: &mut [f32]) -> Result<(), RuntimeError> {
            self.rt.run_decode(latent, out).map_err(|e| convert(self.ordinal, e))
        }

        /// `generate` (noise None) or `generate_from_noise_seeded`.
        pub fn generate(
            &mut self,
            seed: u64,
            noise: Option<&[f32]>,
            out: &mut [f32],
            progress: &mut dyn FnMut(Progress),
        ) -> Result<(), RuntimeError> {
            self.rt.run_batch(seed, noise, out, progress).map_err(|e| convert(self.ordinal, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Precision;
    #[cfg(feature = "cuda")]
    use crate::options::Sampler;

    fn tiny() -> (ModelConfig, WeightStore) {
        let cfg = crate::test_models::small_model_config([4, 4, 4, 4]);
        (cfg.clone(), WeightStore::random(&cfg, 3).unwrap())
    }

    fn cuda(precision: Precision) -> Options {
        Options { device: Device::Cuda(0), precision, ..Options::default() }
    }

    #[test]
    fn the_cpu_backend_reports_its_device_and_plan() {
        let (cfg, store) = tiny();
        let rt = Runtime::from_store(&cfg, &store, Options { threads: Some(1), ..Options::default() }).unwrap();
        assert_eq!(rt.device(), Device::Cpu);
        assert!(rt.plan().total_bytes > 0 && rt.plan().threads == 1);
        assert_eq!(rt.latent_shape(), [4, 4, 4, 4]);
        assert_eq!(rt.output_shape(), [1, 8, 8, 8]);
    }

    /// Planning reports the same bytes as the allocated runtime, before allocating them.
    #[test]
    fn a_plan_reports_its_bytes_before_allocation() {
        let (cfg, store) = tiny();
        let opts = Options { threads: Some(1), ..Options::default() };
        let planned = Runtime::plan_source(&cfg, &store, opts.clone()).unwrap();
        let report = planned.report().clone();
        assert!(report.arena_bytes > 0 && report.weights_bytes > 0);
        assert_eq!(report.total_bytes, report.weights_bytes + report.arena_bytes + report.workspace_bytes + report.state_bytes);
        assert_eq!(planned.output_shape(), [1, 8, 8, 8]);
        let rt = planned.allocate().unwrap();
        assert_eq!(rt.plan(), &report);
        assert_eq!(Runtime::from_store(&cfg, &store, opts).unwrap().plan(), &report);
    }

    /// A configuration with no GroupNorm groups is refused by name for either network (before
    /// any division by the group count).
    #[test]
    fn zero_norm_groups_is_an_invalid_config() {
        let (cfg, store) = tiny();
        let mut no_decoder_groups = cfg.clone();
        no_decoder_groups.decoder.as_mut().unwrap().norm_num_groups = 0;
        let mut no_unet_groups = cfg;
        no_unet_groups.unet.as_mut().unwrap().norm_num_groups = 0;
        for (bad, net) in [(no_decoder_groups, "decoder"), (no_unet_groups, "unet")] {
            let e = Runtime::from_store(&bad, &store, Options::default()).err().expect("must fail");
            assert!(matches!(&e, RuntimeError::InvalidConfig(m) if m.contains(&format!("{net}.norm_num_groups"))), "{e:?}");
        }
    }

    /// Without the feature, asking for a GPU names the device and says how to build one in.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_cuda_is_a_clear_build_error() {
        let (cfg, store) = tiny();
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            let e = Runtime::from_store(&cfg, &store, cuda(p)).err().expect("no CUDA in this build");
            assert!(matches!(e, RuntimeError::DeviceUnavailable(_)), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains("cuda:0") && msg.contains("no CUDA backend"), "{msg}");
            assert!(msg.contains("cargo build --release --features cuda"), "{msg}");
        }
        let e = Runtime::from_store(&cfg, &store, Options { device: Device::Cuda(3), ..Options::default() }).err().unwrap();
        assert!(e.to_string().contains("cuda:3"), "{e}");
    }

    /// With the feature but no driver (CI, this VM), the error says the driver was not found;
    /// on a GPU machine the backend opens and reports its device.
    #[cfg(feature = "cuda")]
    #[test]
    fn with_the_feature_and_no_driver_the_error_names_the_driver() {
        let (cfg, store) = tiny();
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            match Runtime::from_store(&cfg, &store, cuda(p)) {
                Ok(rt) => {
                    assert!(crate::cuda::library_presence().driver);
                    assert_eq!(rt.device(), Device::Cuda(0));
                    assert!(rt.plan().total_bytes > 0 && rt.plan().threads == 0);
                    assert_eq!(rt.output_shape(), [1, 8, 8, 8]);
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(matches!(e, RuntimeError::DeviceUnavailable(_)), "{e:?}");
                    assert!(msg.contains("cuda:0"), "{msg}");
                    if !crate::cuda::library_presence().driver {
                        assert!(msg.contains("no CUDA driver was found") && msg.contains("libcuda.so"), "{msg}");
                    }
                }
            }
        }
    }

    /// The CUDA path checks options like the CPU one, with the same typed errors, before it
    /// touches a device (so these hold with or without a GPU).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_options_are_checked_like_the_cpu_ones() {
        let (cfg, store) = tiny();
        let err = |o: Options| Runtime::from_store(&cfg, &store, o).err().expect("must fail");
        let invalid = |o: Options| matches!(err(o), RuntimeError::InvalidOption(_));
        assert!(invalid(Options { batch: 0, ..cuda(Precision::F32) }));
        assert!(invalid(Options { threads: Some(0), ..cuda(Precision::F32) }));
        assert!(invalid(Options { steps: Some(0), ..cuda(Precision::F32) }));
        assert!(invalid(Options { steps: Some(1001), ..cuda(Precision::F32) }));
        assert!(invalid(Options { sampler: Some(Sampler::Ddim { eta: f32::NAN }), ..cuda(Precision::F32) }));
        assert!(invalid(Options { sampler: Some(Sampler::Ddpm), steps: Some(1001), ..cuda(Precision::F32) }));
        assert!(invalid(Options { sampler: Some(Sampler::Pndm), steps: Some(3), ..cuda(Precision::F32) }));
        assert!(invalid(Options { latent_shape: Some([4, 0, 4, 4]), ..cuda(Precision::F32) }));
        // Found by the host planner (not divisible by the UNet's downsampling), which runs once
        // a GPU is known to be usable: still the CPU's typed error.
        let e = err(Options { latent_shape: Some([4, 3, 4, 4]), ..cuda(Precision::F32) });
        if crate::cuda::check_available(0).is_ok() {
            assert!(matches!(e, RuntimeError::InvalidOption(_)), "{e:?}");
        } else {
            assert!(matches!(e, RuntimeError::DeviceUnavailable(_)), "{e:?}");
        }
        let mut bad = cfg.clone();
        bad.scale_factor = f32::NAN;
        assert!(matches!(Runtime::from_store(&bad, &store, cuda(Precision::F32)).err().unwrap(), RuntimeError::InvalidConfig(_)));
    }
}
