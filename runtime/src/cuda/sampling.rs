//! Sampling on the device: one sampling step enqueued (UNet input from the state x, the UNet,
//! the sampler update, the step counter advanced) and captured as a CUDA graph; the batch loop
//! (initial noise, the graph replayed once per timestep, progress, decoding, download); and the
//! single UNet and decoder passes. Input sizes are the caller's to check (`Runtime`, or
//! `CudaRuntime`'s public entry points).

use super::executor::{bad_option, CudaRuntime};
use super::transfer::{download_f32, f32_bytes};
use crate::options::Progress;
use crate::sampler::prediction_code;
use ldm_cuda::arena::{DevPtr, Region};
use ldm_cuda::error::CudaError;
use ldm_cuda::graph::StepGraph;
use ldm_cuda::kernels::NoiseStream;
use ldm_weights::{DType, SamplerKind};

impl CudaRuntime {
    /// One sampling step at the device step counter: x -> UNet input, UNet, sampler update of
    /// the state x, counter advance. (The UNet's input and output buffers may share arena bytes
    /// in the liveness plan, so the update never writes the input buffer while reading eps.)
    fn enqueue_step(&self, noise: NoiseStream) -> Result<(), CudaError> {
        let (net, _) = self
            .unet
            .as_ref()
            .ok_or_else(|| bad_option("the blob has no UNet".into()))?;
        let n: usize = self.latent.iter().product();
        let (ts, step) = (
            self.ptr(self.regions.timesteps)?,
            self.ptr(self.regions.step)?,
        );
        let (x, eps, coefs) = (
            self.ptr(self.regions.x)?,
            self.ptr(net.output)?,
            self.ptr(self.regions.coefs)?,
        );
        let k = &self.dev.kernels;
        k.cast_from_f32(self.dtype, self.ptr(net.input)?, x, 1.0, n)?;
        self.enqueue_unet(ts, step)?;
        let none = DevPtr::NULL;
        let p = &self.plan;
        let pred = prediction_code(p.prediction);
        match p.kind {
            SamplerKind::Ddim => k.ddim_step(
                self.dtype, x, eps, none, coefs, step, pred, p.clip, noise, n,
            )?,
            SamplerKind::Ddpm => k.ddpm_step(
                self.dtype, x, eps, none, coefs, step, pred, p.clip, noise, n,
            )?,
            SamplerKind::Pndm => {
                let state = self.ptr(self.regions.sampler_state)?;
                k.pndm_step(self.dtype, x, eps, none, coefs, step, pred, state, n)?
            }
        }
        k.step_advance(step)
    }

    pub(super) fn capture_step(&self, noise: NoiseStream) -> Result<StepGraph, CudaError> {
        StepGraph::capture(self.dev.stream(), || self.enqueue_step(noise))
    }

    /// Samples and decodes every volume of the batch: initial latent from Philox (`init` None)
    /// or uploaded from `init` (`batch` latents), then the step graph replayed once per
    /// timestep; `out` holds `batch` volumes.
    pub(crate) fn run_batch(
        &mut self,
        seed: u64,
        init: Option<&[f32]>,
        out: &mut [f32],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), CudaError> {
        let vol: usize = self.out_shape.iter().product();
        self.dev.bind_to_thread()?;
        let n: usize = self.latent.iter().product();
        let stochastic = self.plan.stochastic;
        let total = self.plan.timesteps.len();
        for b in 0..self.batch {
            let base = (b as u64) << 40;
            match init {
                Some(noise) => self.work.upload(
                    self.dev.stream(),
                    self.regions.x,
                    &f32_bytes(&noise[b * n..(b + 1) * n]),
                )?,
                None => self.dev.kernels.philox_normal(
                    DType::F32,
                    self.ptr(self.regions.x)?,
                    DevPtr::NULL,
                    seed,
                    base,
                    n,
                )?,
            }
            self.dev.kernels.step_set(self.ptr(self.regions.step)?, 0)?;
            if stochastic {
                // The noise stream is a launch argument: capture this volume's step graph.
                let noise = NoiseStream {
                    seed,
                    offset: base + n as u64,
                    stride: n as u64,
                };
                self.graph = Some(self.capture_step(noise)?);
            }
            let graph = self
                .graph
                .as_ref()
                .ok_or_else(|| CudaError::Capture("no step graph".into()))?;
            for (index, &timestep) in self.plan.timesteps.iter().enumerate() {
                progress(Progress::Step {
                    index,
                    total,
                    timestep,
                });
                graph.replay()?;
                // Progress reports finished steps; a step is milliseconds, a sync microseconds.
                self.dev.synchronize()?;
            }
            progress(Progress::Decoding);
            self.decode_state(&mut out[b * vol..(b + 1) * vol])?;
        }
        Ok(())
    }

    /// Decodes the latent state x (divided by the scale factor) into `out`.
    fn decode_state(&mut self, out: &mut [f32]) -> Result<(), CudaError> {
        let (net, _) = self
            .decoder
            .as_ref()
            .ok_or_else(|| bad_option("the blob has no decoder".into()))?;
        let n: usize = self.latent.iter().product();
        let k = &self.dev.kernels;
        let (x, input) = (self.ptr(self.regions.x)?, self.ptr(net.input)?);
        k.cast_from_f32(self.dtype, input, x, 1.0 / self.config.scale_factor, n)?;
        self.enqueue_net(net)?;
        self.download_output(net.output, out)
    }

    /// Converts the first `out.len()` elements of a network output to fp32 and downloads them.
    fn download_output(&self, output: Region, out: &mut [f32]) -> Result<(), CudaError> {
        let f32_out = Region {
            offset: self.regions.out_f32.offset,
            bytes: 4 * out.len(),
        };
        let (src, dst) = (self.ptr(output)?, self.ptr(f32_out)?);
        self.dev
            .kernels
            .cast_to_f32(self.dtype, dst, src, 1.0, out.len())?;
        self.dev.synchronize()?;
        download_f32(&self.work, &self.dev, f32_out, out)
    }

    /// One UNet evaluation eps = unet(x, t) (one latent each). Overwrites the sampler state
    /// (the next `generate` starts from fresh noise anyway).
    pub(crate) fn run_unet(&mut self, x: &[f32], t: u32, eps: &mut [f32]) -> Result<(), CudaError> {
        let n: usize = self.latent.iter().product();
        let (net, _) = self
            .unet
            .as_ref()
            .ok_or_else(|| bad_option("the blob has no UNet".into()))?;
        let (input, output) = (net.input, net.output);
        self.dev.bind_to_thread()?;
        self.work
            .upload(self.dev.stream(), self.regions.x, &f32_bytes(x))?;
        self.work.upload(
            self.dev.stream(),
            self.regions.t_single,
            &(t as f32).to_le_bytes(),
        )?;
        let xs = self.ptr(self.regions.x)?;
        self.dev
            .kernels
            .cast_from_f32(self.dtype, self.ptr(input)?, xs, 1.0, n)?;
        self.enqueue_unet(self.ptr(self.regions.t_single)?, DevPtr::NULL)?;
        self.download_output(output, eps)
    }

    /// Decodes one latent (divided by the scale factor) into one volume `out`.
    pub(crate) fn run_decode(&mut self, latent: &[f32], out: &mut [f32]) -> Result<(), CudaError> {
        self.dev.bind_to_thread()?;
        self.work
            .upload(self.dev.stream(), self.regions.x, &f32_bytes(latent))?;
        self.decode_state(out)
    }
}
