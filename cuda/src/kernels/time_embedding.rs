//! Launcher of `time_embedding.cu`: the sinusoidal timestep embedding (cos first), read at the
//! device step counter.

use cudarc::driver::PushKernelArg;
use ldm_weights::DType;

use super::{config, i32_of, Kernels};
use crate::arena::DevPtr;
use crate::error::CudaError;
use crate::geometry;

impl Kernels {
    /// Sinusoidal embedding of timesteps[*step] (cos first) into out[batch, dim].
    pub fn timestep_embedding(
        &self,
        dtype: DType,
        out: DevPtr,
        timesteps: DevPtr,
        step: DevPtr,
        batch: usize,
        dim: usize,
    ) -> Result<(), CudaError> {
        const K: &str = "ldm_timestep_embedding";
        let total = batch
            .checked_mul(dim)
            .ok_or_else(|| CudaError::InvalidLaunch {
                kernel: K,
                reason: "size overflows".into(),
            })?;
        let Some(l) = geometry::elementwise(total as u64) else {
            return Ok(());
        };
        let (bt, d) = (i32_of(K, batch)?, i32_of(K, dim)?);
        let (out, ts, st) = (out.0, timesteps.0, step.0);
        let f = self.typed("timestep_embedding", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&out).arg(&ts).arg(&st).arg(&bt).arg(&d);
        unsafe { b.launch(config(l)) }
            .map_err(CudaError::driver("launch ldm_timestep_embedding"))?;
        Ok(())
    }
}
