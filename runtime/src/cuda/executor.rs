//! The CUDA runtime: the backend-neutral graphs (built by `model`, lowered by `lower`) executed on one GPU
//! in fp32. Everything is allocated when it is built (`setup.rs`): one weights arena (conv
//! weights in the blob's PyTorch layout, never packed for the CPU, and every parameter vector),
//! one work arena (the plan's activations shared by the UNet and decoder phases, scratch, cuDNN
//! and cuBLAS workspaces, sampler state and tables). A sampling step (time-embedding MLP, UNet,
//! sampler update, step-counter advance) is captured once as a CUDA graph and replayed;
//! per-step values are read on the device through the step counter. Noise and sampler arithmetic follow the CPU exactly (same Philox stream
//! offsets: volume b from b * 2^40, initial noise [0, n), step s noise [(s + 1) n, (s + 2) n)).
//!
//! Precision: activations and conv weights in fp32, fp16 or bf16 (`Options::precision`), with
//! fp32 accumulation everywhere; the sampler state, GroupNorm statistics, biases and the
//! time-embedding MLP stay fp32. Half-precision activations keep the fp32 plan's byte offsets
//! (each buffer then uses half of its bytes), so the plan's reuse stays valid unchanged.
//!
//! This file holds the runtime's state and its public entry points, which check their input
//! (`crate::inputs`, the checks `Runtime` applies before it calls the unchecked passes); the
//! jobs are in `setup.rs` (building), `layout.rs` (the arenas), `transfer.rs` (host-device
//! copies), `launch.rs` (one network pass) and `sampling.rs` (steps, the batch loop, decoding).

use super::layout::Regions;
use super::lower::Lowered;
use crate::error::RuntimeError;
use crate::inputs::Inputs;
use crate::model::{DecoderModel, UnetModel};
use crate::options::{self, Options, Precision, Progress};
use crate::plan::PlanReport;
use crate::sampler::SamplerPlan;
use crate::weights::WeightSource;
use ldm_cuda::arena::{DevPtr, DeviceArena, Region};
use ldm_cuda::conv::ConvPlan;
use ldm_cuda::device::CudaDevice;
use ldm_cuda::error::CudaError;
use ldm_cuda::graph::StepGraph;
use ldm_weights::{DType, ModelConfig};

/// One network on the device: its lowered steps and a cuDNN plan per distinct conv shape.
pub(super) struct Net {
    pub(super) lowered: Lowered,
    pub(super) plans: Vec<ConvPlan>,
    pub(super) input: Region,
    pub(super) output: Region,
}

pub struct CudaRuntime {
    pub(super) graph: Option<StepGraph>,
    pub(super) unet: Option<(Net, UnetModel)>,
    pub(super) decoder: Option<(Net, DecoderModel)>,
    pub(super) regions: Regions,
    pub(super) conv_weights: Vec<Region>,
    pub(super) vectors: Vec<Region>,
    pub(super) weights: DeviceArena,
    pub(super) work: DeviceArena,
    pub(super) dev: CudaDevice,
    pub(super) config: ModelConfig,
    pub(super) dtype: DType,
    pub(super) plan: SamplerPlan,
    pub(super) latent: [usize; 4],
    pub(super) out_shape: [usize; 4],
    pub(super) batch: usize,
    pub(super) report: PlanReport,
}

// SAFETY: a CudaRuntime exclusively owns its context, stream, module, cuBLAS/cuDNN handles,
// descriptors, graph and arenas (nothing is shared with another owner), so moving it to another
// thread moves all of them together. cuBLAS and cuDNN allow a handle to be used from any host
// thread as long as no two threads use it at once, which `&mut self`/single ownership ensures
// (the type is not Sync). Every entry point and `Drop` first binds the context to the calling
// thread, so calls made after a move run in the right context.
unsafe impl Send for CudaRuntime {}

impl Drop for CudaRuntime {
    fn drop(&mut self) {
        // Handles and descriptors are destroyed by the fields' own Drop, right after this, in
        // this context. Nothing can be reported from drop; a failure leaves the current one.
        let _ = self.dev.bind_to_thread();
    }
}

pub(super) fn bad_option(msg: String) -> CudaError {
    CudaError::Shape(msg)
}

/// A host-side planning error (model build, schedule), kept typed for `Runtime`'s callers.
pub(super) fn plan_error(e: RuntimeError) -> CudaError {
    CudaError::Plan(Box::new(e))
}

impl CudaRuntime {
    /// Resolves `opts` against the model as `Runtime` does (the same checks and typed errors,
    /// every precision), then builds the plan on the host, reports it, opens the GPU and
    /// allocates everything.
    pub fn new(
        config: &ModelConfig,
        store: &dyn WeightSource,
        opts: &Options,
    ) -> Result<Self, CudaError> {
        let all = [Precision::F32, Precision::F16, Precision::Bf16];
        let resolved = options::resolve(config, opts, &all).map_err(plan_error)?;
        CudaRuntime::from_resolved(config, store, opts, resolved)
    }

    pub fn report(&self) -> &PlanReport {
        &self.report
    }

    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    pub fn output_shape(&self) -> [usize; 4] {
        self.out_shape
    }

    pub fn timesteps(&self) -> &[u32] {
        &self.plan.timesteps
    }

    pub fn latent_shape(&self) -> [usize; 4] {
        self.latent
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn flops_per_unet_step(&self) -> f64 {
        self.unet.as_ref().map_or(0.0, |(_, u)| u.graph.flops)
    }

    pub fn flops_per_decode(&self) -> f64 {
        self.decoder.as_ref().map_or(0.0, |(_, d)| d.graph.flops)
    }

    pub(super) fn ptr(&self, r: Region) -> Result<DevPtr, CudaError> {
        self.work.ptr(r)
    }

    pub(super) fn vec_ptr(&self, i: usize) -> Result<DevPtr, CudaError> {
        let r = *self
            .vectors
            .get(i)
            .ok_or_else(|| CudaError::Arena(format!("missing parameter vector {i}")))?;
        self.weights.ptr(r)
    }

    /// What each call's buffers must hold (the checks of `Runtime`).
    fn inputs(&self) -> Inputs {
        Inputs::new(&self.config, self.latent, self.out_shape, self.batch)
    }

    /// Generates `batch` volumes from `seed` into `out` (fp32, [batch, C, D, H, W]), with the
    /// CPU runtime's noise streams.
    pub fn generate(&mut self, seed: u64, out: &mut [f32]) -> Result<(), CudaError> {
        self.generate_with_progress(seed, out, &mut |_| {})
    }

    /// `generate` reporting each step (after the GPU finished it) and the start of decoding.
    pub fn generate_with_progress(
        &mut self,
        seed: u64,
        out: &mut [f32],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), CudaError> {
        self.inputs()
            .generate(out.len(), None)
            .map_err(plan_error)?;
        self.run_batch(seed, None, out, progress)
    }

    /// Like `generate` but from the given initial noise (`batch` latents, fp32); stochastic
    /// samplers draw their step noise from `seed` at the CPU runtime's offsets.
    pub fn generate_from_noise_seeded(
        &mut self,
        noise: &[f32],
        seed: u64,
        out: &mut [f32],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), CudaError> {
        self.inputs()
            .generate(out.len(), Some(noise.len()))
            .map_err(plan_error)?;
        self.run_batch(seed, Some(noise), out, progress)
    }

    /// One UNet evaluation eps = unet(x, t), for parity checks against the CPU. Overwrites the
    /// sampler state (the next `generate` starts from fresh noise anyway).
    pub fn unet_forward(&mut self, x: &[f32], t: u32, eps: &mut [f32]) -> Result<(), CudaError> {
        self.inputs()
            .unet_forward(x.len(), eps.len())
            .map_err(plan_error)?;
        self.run_unet(x, t, eps)
    }

    /// Decodes one latent (divided by the scale factor) into `out`, for parity checks.
    pub fn decode(&mut self, latent: &[f32], out: &mut [f32]) -> Result<(), CudaError> {
        self.inputs()
            .decode(latent.len(), out.len())
            .map_err(plan_error)?;
        self.run_decode(latent, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Device;
    use crate::weights::WeightStore;

    fn tiny() -> (ModelConfig, WeightStore) {
        let cfg = crate::test_models::small_model_config([4, 4, 4, 4]);
        let store = WeightStore::random(&cfg, 1).unwrap();
        (cfg, store)
    }

    #[test]
    fn options_the_executor_cannot_honour_are_errors() {
        let (cfg, store) = tiny();
        let cpu = Options::default();
        assert!(matches!(
            CudaRuntime::new(&cfg, &store, &cpu),
            Err(CudaError::Shape(_))
        ));
        let half = Options {
            device: Device::Cuda(0),
            precision: Precision::Bf16,
            ..Options::default()
        };
        // bf16 is supported; without a GPU it fails only for want of a device.
        if let Err(e) = CudaRuntime::new(&cfg, &store, &half) {
            assert!(
                matches!(
                    e,
                    CudaError::DeviceUnavailable { .. } | CudaError::Cudnn { .. }
                ),
                "{e:?}"
            );
        }
        let zero = Options {
            device: Device::Cuda(0),
            batch: 0,
            ..Options::default()
        };
        assert!(CudaRuntime::new(&cfg, &store, &zero).is_err());
    }

    #[test]
    fn without_a_gpu_the_runtime_is_unavailable_not_a_panic() {
        let (cfg, store) = tiny();
        let opts = Options {
            device: Device::Cuda(0),
            ..Options::default()
        };
        match CudaRuntime::new(&cfg, &store, &opts) {
            Ok(rt) => println!(
                "GPU present: {:?}, plan {:?}",
                rt.device().info(),
                rt.report()
            ),
            Err(e) => {
                println!("CUDA runtime unavailable here: {e}");
                if !ldm_cuda::library_presence().driver {
                    assert!(matches!(e, CudaError::DeviceUnavailable { .. }), "{e:?}");
                }
            }
        }
    }
}
