//! Launchers of `sampler.cu`: the DDIM, DDPM and PNDM updates (CPU operation order) over per-step
//! coefficient rows, and the device step counter (set, advance).

use cudarc::driver::{LaunchConfig, PushKernelArg};
use ldm_weights::DType;

use super::{config, i64_of, Kernels, NoiseStream};
use crate::arena::DevPtr;
use crate::error::CudaError;
use crate::geometry;

impl Kernels {
    /// DDIM update of the fp32 state `x` at the device step (rows of ldm-runtime's
    /// `sampler::plan`), from the model output `eps` predicting `prediction` (0 epsilon, 1
    /// sample, 2 v); x0 clamped to [-1, 1] when `clip`; writes `x_t` in `dtype` unless NULL.
    #[allow(clippy::too_many_arguments)]
    pub fn ddim_step(
        &self,
        dtype: DType,
        x: DevPtr,
        eps: DevPtr,
        x_t: DevPtr,
        coefs: DevPtr,
        step: DevPtr,
        prediction: i32,
        clip: bool,
        noise: NoiseStream,
        n: usize,
    ) -> Result<(), CudaError> {
        self.ancestral(
            "ddim_step",
            dtype,
            [x, eps, x_t, coefs, step],
            prediction,
            clip,
            noise,
            n,
        )
    }

    /// DDPM update (rows of `sampler::plan`), x0 clamped to [-1, 1] when `clip`.
    #[allow(clippy::too_many_arguments)]
    pub fn ddpm_step(
        &self,
        dtype: DType,
        x: DevPtr,
        eps: DevPtr,
        x_t: DevPtr,
        coefs: DevPtr,
        step: DevPtr,
        prediction: i32,
        clip: bool,
        noise: NoiseStream,
        n: usize,
    ) -> Result<(), CudaError> {
        self.ancestral(
            "ddpm_step",
            dtype,
            [x, eps, x_t, coefs, step],
            prediction,
            clip,
            noise,
            n,
        )
    }

    /// The DDIM and DDPM kernels share their argument list.
    #[allow(clippy::too_many_arguments)]
    fn ancestral(
        &self,
        op: &'static str,
        dtype: DType,
        ptrs: [DevPtr; 5],
        prediction: i32,
        clip: bool,
        noise: NoiseStream,
        n: usize,
    ) -> Result<(), CudaError> {
        let Some(l) = geometry::elementwise(n as u64) else {
            return Ok(());
        };
        let n = i64_of(op, n)?;
        let clip = i32::from(clip);
        let [x, eps, x_t, coefs, step] = ptrs.map(|p| p.0);
        let f = self.typed(op, dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&x)
            .arg(&eps)
            .arg(&x_t)
            .arg(&coefs)
            .arg(&step)
            .arg(&prediction)
            .arg(&clip);
        b.arg(&noise.seed)
            .arg(&noise.offset)
            .arg(&noise.stride)
            .arg(&n);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver(op))?;
        Ok(())
    }

    /// PNDM update (rows of `sampler::plan`) with its state of six latent-sized fp32 vectors
    /// (`state`: four slots of past outputs, the Runge-Kutta start sample, the accumulator).
    #[allow(clippy::too_many_arguments)]
    pub fn pndm_step(
        &self,
        dtype: DType,
        x: DevPtr,
        eps: DevPtr,
        x_t: DevPtr,
        coefs: DevPtr,
        step: DevPtr,
        prediction: i32,
        state: DevPtr,
        n: usize,
    ) -> Result<(), CudaError> {
        let Some(l) = geometry::elementwise(n as u64) else {
            return Ok(());
        };
        let n = i64_of("ldm_pndm_step", n)?;
        let (x, eps, x_t, coefs, step, state) = (x.0, eps.0, x_t.0, coefs.0, step.0, state.0);
        let f = self.typed("pndm_step", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&x)
            .arg(&eps)
            .arg(&x_t)
            .arg(&coefs)
            .arg(&step)
            .arg(&prediction)
            .arg(&state)
            .arg(&n);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_pndm_step"))?;
        Ok(())
    }

    /// *step = value (device int), in stream order.
    pub fn step_set(&self, step: DevPtr, value: i32) -> Result<(), CudaError> {
        let f = self.function("ldm_step_set")?;
        let step = step.0;
        let mut b = self.stream.launch_builder(f);
        b.arg(&step).arg(&value);
        unsafe {
            b.launch(LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (1, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map_err(CudaError::driver("launch ldm_step_set"))?;
        Ok(())
    }

    /// *step += 1 (device int), in stream order: the last node of a captured step.
    pub fn step_advance(&self, step: DevPtr) -> Result<(), CudaError> {
        let f = self.function("ldm_step_advance")?;
        let step = step.0;
        let mut b = self.stream.launch_builder(f);
        b.arg(&step);
        unsafe {
            b.launch(LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (1, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map_err(CudaError::driver("launch ldm_step_advance"))?;
        Ok(())
    }
}
