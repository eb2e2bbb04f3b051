//! Launchers of `elementwise.cu`: add, channel concatenation, per-channel bias, SiLU and the
//! casts between fp32 and the storage type.

use cudarc::driver::PushKernelArg;
use ldm_weights::DType;

use super::{config, i32_of, i64_of, Kernels};
use crate::arena::DevPtr;
use crate::error::CudaError;
use crate::geometry;

impl Kernels {
    /// out = a + b elementwise (out may alias a or b).
    pub fn add(
        &self,
        dtype: DType,
        out: DevPtr,
        a: DevPtr,
        b_in: DevPtr,
        n: usize,
    ) -> Result<(), CudaError> {
        let Some(l) = geometry::elementwise(n as u64) else {
            return Ok(());
        };
        let n = i64_of("ldm_add", n)?;
        let (out, a, b_in) = (out.0, a.0, b_in.0);
        let f = self.typed("add", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&out).arg(&a).arg(&b_in).arg(&n);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_add"))?;
        Ok(())
    }

    /// out[n] = concat(a[n] (ca channels), b[n] (cb channels)) along channels.
    #[allow(clippy::too_many_arguments)]
    pub fn concat_channels(
        &self,
        dtype: DType,
        out: DevPtr,
        a: DevPtr,
        b_in: DevPtr,
        ca: usize,
        cb: usize,
        spatial: usize,
        batch: usize,
    ) -> Result<(), CudaError> {
        const K: &str = "ldm_concat_channels";
        let total = (ca + cb)
            .checked_mul(spatial)
            .and_then(|v| v.checked_mul(batch));
        let total = total.ok_or_else(|| CudaError::InvalidLaunch {
            kernel: K,
            reason: "size overflows".into(),
        })?;
        let Some(l) = geometry::elementwise(total as u64) else {
            return Ok(());
        };
        let (ca, cb, spatial, batch) = (
            i32_of(K, ca)?,
            i32_of(K, cb)?,
            i64_of(K, spatial)?,
            i32_of(K, batch)?,
        );
        let (out, a, b_in) = (out.0, a.0, b_in.0);
        let f = self.typed("concat_channels", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&out)
            .arg(&a)
            .arg(&b_in)
            .arg(&ca)
            .arg(&cb)
            .arg(&spatial)
            .arg(&batch);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_concat_channels"))?;
        Ok(())
    }

    /// x[n, c, :] += bias[n * bias_batch_stride + c] (fp32 bias; stride 0 = shared vector).
    #[allow(clippy::too_many_arguments)]
    pub fn add_channel_bias(
        &self,
        dtype: DType,
        x: DevPtr,
        bias: DevPtr,
        batch: usize,
        channels: usize,
        spatial: usize,
        bias_batch_stride: usize,
    ) -> Result<(), CudaError> {
        const K: &str = "ldm_add_channel_bias";
        let total = batch
            .checked_mul(channels)
            .and_then(|v| v.checked_mul(spatial));
        let total = total.ok_or_else(|| CudaError::InvalidLaunch {
            kernel: K,
            reason: "size overflows".into(),
        })?;
        let Some(l) = geometry::elementwise(total as u64) else {
            return Ok(());
        };
        let (c, s, bbs, t) = (
            i32_of(K, channels)?,
            i64_of(K, spatial)?,
            i64_of(K, bias_batch_stride)?,
            i64_of(K, total)?,
        );
        let (x, bias) = (x.0, bias.0);
        let f = self.typed("add_channel_bias", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&x).arg(&bias).arg(&c).arg(&s).arg(&bbs).arg(&t);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_add_channel_bias"))?;
        Ok(())
    }

    /// out = SiLU(input) (may be in place).
    pub fn silu(
        &self,
        dtype: DType,
        out: DevPtr,
        input: DevPtr,
        n: usize,
    ) -> Result<(), CudaError> {
        let Some(l) = geometry::elementwise(n as u64) else {
            return Ok(());
        };
        let n = i64_of("ldm_silu", n)?;
        let (out, input) = (out.0, input.0);
        let f = self.typed("silu", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&out).arg(&input).arg(&n);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_silu"))?;
        Ok(())
    }

    /// out (dtype) = input (fp32) * scale.
    pub fn cast_from_f32(
        &self,
        dtype: DType,
        out: DevPtr,
        input: DevPtr,
        scale: f32,
        n: usize,
    ) -> Result<(), CudaError> {
        let Some(l) = geometry::elementwise(n as u64) else {
            return Ok(());
        };
        let n = i64_of("ldm_cast_from_f32", n)?;
        let (out, input) = (out.0, input.0);
        let f = self.typed("cast_from_f32", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&out).arg(&input).arg(&scale).arg(&n);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_cast_from_f32"))?;
        Ok(())
    }

    /// out (fp32) = input (dtype) * scale.
    pub fn cast_to_f32(
        &self,
        dtype: DType,
        out: DevPtr,
        input: DevPtr,
        scale: f32,
        n: usize,
    ) -> Result<(), CudaError> {
        let Some(l) = geometry::elementwise(n as u64) else {
            return Ok(());
        };
        let n = i64_of("ldm_cast_to_f32", n)?;
        let (out, input) = (out.0, input.0);
        let f = self.typed("cast_to_f32", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&out).arg(&input).arg(&scale).arg(&n);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_cast_to_f32"))?;
        Ok(())
    }
}
