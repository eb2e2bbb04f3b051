//! Launcher of `philox.cu`: the CPU's Philox4x32-10 + Box-Muller stream on the device, and
//! `NoiseStream`, where a sampler update's noise comes from.

use cudarc::driver::PushKernelArg;
use ldm_weights::DType;

use super::{config, i64_of, Kernels};
use crate::arena::DevPtr;
use crate::error::CudaError;
use crate::geometry;

/// Where the noise of a sampler update comes from: philox_normal(seed, offset + step * stride + i).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoiseStream {
    pub seed: u64,
    pub offset: u64,
    pub stride: u64,
}
impl Kernels {
    /// out[i] = philox_normal(seed, offset + i) in fp32, and in `dtype` into `out_t` unless NULL.
    pub fn philox_normal(
        &self,
        dtype: DType,
        out: DevPtr,
        out_t: DevPtr,
        seed: u64,
        offset: u64,
        n: usize,
    ) -> Result<(), CudaError> {
        let Some(l) = geometry::elementwise(n as u64) else {
            return Ok(());
        };
        let n = i64_of("ldm_philox_normal", n)?;
        let f = self.typed("philox_normal", dtype)?;
        let (out, out_t) = (out.0, out_t.0);
        let mut b = self.stream.launch_builder(f);
        b.arg(&out).arg(&out_t).arg(&seed).arg(&offset).arg(&n);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_philox_normal"))?;
        Ok(())
    }
}
