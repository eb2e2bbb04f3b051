//! Launcher of `upsample.cu`: nearest-neighbour 2x upsampling of a channel-major volume.

use cudarc::driver::PushKernelArg;
use ldm_weights::DType;

use super::{config, i32_of, i64_of, Kernels};
use crate::arena::DevPtr;
use crate::error::CudaError;
use crate::geometry;

impl Kernels {
    /// Nearest x2 upsampling of `rows` = N*C channels of `dims` voxels.
    pub fn upsample_nearest2x(
        &self,
        dtype: DType,
        input: DevPtr,
        out: DevPtr,
        rows: usize,
        dims: [usize; 3],
    ) -> Result<(), CudaError> {
        let l = geometry::upsample_nearest2x(rows, dims)?;
        let rows = i64_of("ldm_upsample_nearest2x", rows)?;
        let (d, h, w) = (
            i32_of("ldm_upsample_nearest2x", dims[0])?,
            i32_of("ldm_upsample_nearest2x", dims[1])?,
            i32_of("ldm_upsample_nearest2x", dims[2])?,
        );
        let (input, out) = (input.0, out.0);
        let f = self.typed("upsample_nearest2x", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&input).arg(&out).arg(&rows).arg(&d).arg(&h).arg(&w);
        unsafe { b.launch(config(l)) }
            .map_err(CudaError::driver("launch ldm_upsample_nearest2x"))?;
        Ok(())
    }
}
