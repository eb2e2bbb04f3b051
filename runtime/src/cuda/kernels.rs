//! The kernel table and one thin typed launcher per kernel family. Names follow `cuda/*.cu`:
//! `ldm_<op>_<f32|f16|bf16>` per storage type plus a few untyped ones; `kernel_names()` lists
//! exactly what the fatbin must contain (a host test compares it with the PTX entries).
//! Launchers take raw arena addresses (`DevPtr`) and sizes, compute their grid with
//! `geometry`, and enqueue on the backend's stream; they allocate nothing on the device.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use ldm_weights::DType;

use super::arena::DevPtr;
use super::error::CudaError;
use super::geometry::{self, GroupNormGeometry, Launch};

/// Kernels instantiated once per storage type (`ldm_<op>_<suffix>`).
pub const TYPED_OPS: [&str; 17] = [
    "add",
    "add_channel_bias",
    "attention_hd16",
    "attention_hd32",
    "attention_hd64",
    "attention_hd128",
    "cast_from_f32",
    "cast_to_f32",
    "concat_channels",
    "ddim_step",
    "ddpm_step",
    "groupnorm_apply",
    "groupnorm_partial",
    "philox_normal",
    "silu",
    "timestep_embedding",
    "upsample_nearest2x",
];

/// Kernels with no storage type.
pub const UNTYPED_KERNELS: [&str; 3] =
    ["ldm_groupnorm_finalize", "ldm_step_advance", "ldm_step_set"];

/// All storage types the kernels are instantiated for.
pub const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Name suffix of a storage type.
pub fn suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
    }
}

/// Entry-point name of a typed op.
pub fn typed_name(op: &str, dtype: DType) -> String {
    format!("ldm_{op}_{}", suffix(dtype))
}

/// Every entry point the launchers use, sorted.
pub fn kernel_names() -> Vec<String> {
    let mut names: Vec<String> = TYPED_OPS
        .iter()
        .flat_map(|op| DTYPES.iter().map(move |&d| typed_name(op, d)))
        .chain(UNTYPED_KERNELS.iter().map(|s| s.to_string()))
        .collect();
    names.sort();
    names
}

fn config(l: Launch) -> LaunchConfig {
    LaunchConfig {
        grid_dim: l.grid,
        block_dim: l.block,
        shared_mem_bytes: l.shared_bytes,
    }
}

fn i64_of(what: &'static str, v: usize) -> Result<i64, CudaError> {
    i64::try_from(v).map_err(|_| CudaError::InvalidLaunch {
        kernel: what,
        reason: format!("{v} exceeds 64-bit signed"),
    })
}

fn i32_of(what: &'static str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::InvalidLaunch {
        kernel: what,
        reason: format!("{v} exceeds 32-bit signed"),
    })
}

/// All kernels of the module, looked up by name once at construction, plus the stream.
pub struct Kernels {
    stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
}

/// Arguments of a flash-attention launch (channel-major q/k/v, see cuda/attention.cu).
#[derive(Debug, Clone, Copy)]
pub struct AttentionArgs {
    pub q: DevPtr,
    pub k: DevPtr,
    pub v: DevPtr,
    /// fp32 biases of to_q/to_k/to_v, or NULL.
    pub bias_q: DevPtr,
    pub bias_k: DevPtr,
    pub bias_v: DevPtr,
    pub out: DevPtr,
    /// Added to the output (may equal `out`), or NULL.
    pub residual: DevPtr,
    pub batch: usize,
    pub channels: usize,
    pub tokens: usize,
    pub head_dim: usize,
    /// Elements between samples in q/k/v (channels * tokens, or 3x that when stacked).
    pub qkv_batch_stride: usize,
    /// Elements between samples in out/residual.
    pub out_batch_stride: usize,
}

/// Where the noise of a sampler update comes from: philox_normal(seed, offset + step * stride + i).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoiseStream {
    pub seed: u64,
    pub offset: u64,
    pub stride: u64,
}

impl Kernels {
    /// Looks up every name of `kernel_names()` in `module`.
    pub fn load(module: &Arc<CudaModule>, stream: Arc<CudaStream>) -> Result<Self, CudaError> {
        let mut functions = HashMap::new();
        for name in kernel_names() {
            let f = module
                .load_function(&name)
                .map_err(|_| CudaError::MissingKernel(name.clone()))?;
            functions.insert(name, f);
        }
        Ok(Kernels { stream, functions })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn function(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.functions
            .get(name)
            .ok_or_else(|| CudaError::MissingKernel(name.to_string()))
    }

    fn typed(&self, op: &str, dtype: DType) -> Result<&CudaFunction, CudaError> {
        self.function(&typed_name(op, dtype))
    }

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

    /// GroupNorm statistics of x ([batch, C, spatial]) folded into `scale_shift`: per sample
    /// [scale[C], shift[C]] in fp32 (`geom.scale_shift_bytes()`), the layout of the CPU plan's
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

    /// Flash attention, scale 1/sqrt(head_dim), optional residual add.
    pub fn attention(&self, dtype: DType, a: &AttentionArgs) -> Result<(), CudaError> {
        const K: &str = "ldm_attention";
        let l = geometry::attention(a.batch, a.channels, a.tokens, a.head_dim)?;
        let tokens = i32_of(K, a.tokens)?;
        let qkv_bs = i64_of(K, a.qkv_batch_stride)?;
        let out_bs = i64_of(K, a.out_batch_stride)?;
        let scale = 1.0f32 / (a.head_dim as f32).sqrt();
        let f = self.typed(&format!("attention_hd{}", a.head_dim), dtype)?;
        let (q, k, v, bq, bk, bv, out, res) = (
            a.q.0,
            a.k.0,
            a.v.0,
            a.bias_q.0,
            a.bias_k.0,
            a.bias_v.0,
            a.out.0,
            a.residual.0,
        );
        let mut b = self.stream.launch_builder(f);
        b.arg(&q)
            .arg(&k)
            .arg(&v)
            .arg(&bq)
            .arg(&bk)
            .arg(&bv)
            .arg(&out)
            .arg(&res);
        b.arg(&tokens).arg(&qkv_bs).arg(&out_bs).arg(&scale);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_attention"))?;
        Ok(())
    }

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

    /// DDIM update of the fp32 state `x` at the device step (coefficient table from
    /// `sampler::ddim_table`); writes `x_t` in `dtype` unless NULL.
    #[allow(clippy::too_many_arguments)]
    pub fn ddim_step(
        &self,
        dtype: DType,
        x: DevPtr,
        eps: DevPtr,
        x_t: DevPtr,
        coefs: DevPtr,
        step: DevPtr,
        noise: NoiseStream,
        n: usize,
    ) -> Result<(), CudaError> {
        let Some(l) = geometry::elementwise(n as u64) else {
            return Ok(());
        };
        let n = i64_of("ldm_ddim_step", n)?;
        let (x, eps, x_t, coefs, step) = (x.0, eps.0, x_t.0, coefs.0, step.0);
        let f = self.typed("ddim_step", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&x).arg(&eps).arg(&x_t).arg(&coefs).arg(&step);
        b.arg(&noise.seed)
            .arg(&noise.offset)
            .arg(&noise.stride)
            .arg(&n);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_ddim_step"))?;
        Ok(())
    }

    /// DDPM update (table from `sampler::ddpm_table`), x0 clamped to [-1, 1] when `clip`.
    #[allow(clippy::too_many_arguments)]
    pub fn ddpm_step(
        &self,
        dtype: DType,
        x: DevPtr,
        eps: DevPtr,
        x_t: DevPtr,
        coefs: DevPtr,
        step: DevPtr,
        clip: bool,
        noise: NoiseStream,
        n: usize,
    ) -> Result<(), CudaError> {
        let Some(l) = geometry::elementwise(n as u64) else {
            return Ok(());
        };
        let n = i64_of("ldm_ddpm_step", n)?;
        let clip = i32::from(clip);
        let (x, eps, x_t, coefs, step) = (x.0, eps.0, x_t.0, coefs.0, step.0);
        let f = self.typed("ddpm_step", dtype)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&x)
            .arg(&eps)
            .arg(&x_t)
            .arg(&coefs)
            .arg(&step)
            .arg(&clip);
        b.arg(&noise.seed)
            .arg(&noise.offset)
            .arg(&noise.stride)
            .arg(&n);
        unsafe { b.launch(config(l)) }.map_err(CudaError::driver("launch ldm_ddpm_step"))?;
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

#[cfg(test)]
mod tests {
    use super::super::fatbin::{ptx_entries, FATBIN};
    use super::*;

    #[test]
    fn launchers_and_fatbin_agree_on_every_kernel() {
        let names = kernel_names();
        assert_eq!(names.len(), TYPED_OPS.len() * 3 + UNTYPED_KERNELS.len());
        let entries = ptx_entries(FATBIN);
        assert_eq!(entries, names, "kernels in cuda/*.cu and kernels.rs differ");
    }

    #[test]
    fn attention_head_dims_have_kernels() {
        for hd in geometry::ATTENTION_HEAD_DIMS {
            assert!(TYPED_OPS.contains(&format!("attention_hd{hd}").as_str()));
        }
        assert_eq!(typed_name("silu", DType::BF16), "ldm_silu_bf16");
    }
}
