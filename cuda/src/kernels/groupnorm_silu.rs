//! Launchers of `groupnorm_silu.cu`: GroupNorm statistics (Welford partials per split, then
//! per-channel scale/shift) and the apply pass with optional SiLU.

use cudarc::driver::PushKernelArg;
use ldm_weights::DType;

use super::{config, i32_of, i64_of, Kernels};
use crate::arena::DevPtr;
use crate::error::CudaError;
use crate::geometry::GroupNormGeometry;

impl Kernels {
    /// GroupNorm statistics of x ([batch, C, spatial]) folded into `scale_shift`: per sample
    /// [scale[C], shift[C]] in fp32 (`geom.scale_shift_bytes()`), the layout of the runtime graph's
    /// Stats op. `partial` is fp32 scratch of `geom.partial_bytes()`; gamma/beta are fp32 [C].
    #[allow(clippy::too_many_arguments)]
    pub fn groupnorm_stats(
        &self,
        dtype: DType,
        geom: &GroupNormGeometry,
        x: DevPtr,
        gamma: DevPtr,
        beta: DevPtr,
        partial: DevPtr,
        scale_shift: DevPtr,
        channels: usize,
        groups: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        const K: &str = "ldm_groupnorm";
        if channels == 0
            || groups == 0
            || geom.channel_rows as usize % channels != 0
            || geom.rows as usize != geom.channel_rows as usize / channels * groups
        {
            return Err(CudaError::InvalidLaunch {
                kernel: K,
                reason: format!(
                    "geometry {geom:?} is not for {channels} channels in {groups} groups"
                ),
            });
        }
        let batch = i32_of(K, geom.channel_rows as usize / channels)?;
        let group_elems = i64_of(K, geom.group_elems as usize)?;
        let chunk = i64_of(K, geom.chunk as usize)?;
        let splits = geom.splits as i32;
        let (c, g) = (i32_of(K, channels)?, i32_of(K, groups)?);
        let (xp, gp, bp, pp, sp) = (x.0, gamma.0, beta.0, partial.0, scale_shift.0);
        {
            let f = self.typed("groupnorm_partial", dtype)?;
            let mut b = self.stream.launch_builder(f);
            b.arg(&xp)
                .arg(&pp)
                .arg(&group_elems)
                .arg(&chunk)
                .arg(&splits);
            unsafe { b.launch(config(geom.partial)) }
                .map_err(CudaError::driver("launch ldm_groupnorm_partial"))?;
        }
        let f = self.function("ldm_groupnorm_finalize")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&pp).arg(&gp).arg(&bp).arg(&sp);
        b.arg(&batch).arg(&c).arg(&g).arg(&splits).arg(&eps);
        unsafe { b.launch(config(geom.finalize)) }
            .map_err(CudaError::driver("launch ldm_groupnorm_finalize"))?;
        Ok(())
    }

    /// y = x * scale + shift per (sample, channel) from `groupnorm_stats`, then SiLU if `silu`
    /// (y may equal x).
    #[allow(clippy::too_many_arguments)]
    pub fn groupnorm_apply(
        &self,
        dtype: DType,
        geom: &GroupNormGeometry,
        x: DevPtr,
        y: DevPtr,
        scale_shift: DevPtr,
        channels: usize,
        spatial: usize,
        silu: bool,
    ) -> Result<(), CudaError> {
        const K: &str = "ldm_groupnorm_apply";
        let (c, s) = (i32_of(K, channels)?, i64_of(K, spatial)?);
        let silu = i32::from(silu);
        let (xp, yp, sp) = (x.0, y.0, scale_shift.0);
        let f = self.typed("groupnorm_apply", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&xp).arg(&yp).arg(&sp).arg(&c).arg(&s).arg(&silu);
        unsafe { b.launch(config(geom.apply)) }
            .map_err(CudaError::driver("launch ldm_groupnorm_apply"))?;
        Ok(())
    }
}
