//! The launches of one pass of a network on the device: every lowered step (GroupNorm
//! statistics and application, upsampling, cuDNN convolutions, biases, residual adds, copies,
//! attention, concatenation), and before the UNet its time embedding, MLP and the ResnetBlocks'
//! per-timestep biases. Enqueued on the runtime's stream, so a sampling step can be captured.

use super::executor::{bad_option, CudaRuntime, Net};
use super::lower::{BiasRef, Step};
use ldm_cuda::arena::DevPtr;
use ldm_cuda::error::CudaError;
use ldm_cuda::gemm::GemmSpec;
use ldm_cuda::geometry;
use ldm_cuda::kernels::AttentionArgs;
use ldm_weights::DType;

impl CudaRuntime {
    /// Enqueues the steps of one lowered network.
    pub(super) fn enqueue_net(&self, net: &Net) -> Result<(), CudaError> {
        let k = &self.dev.kernels;
        let dt = self.dtype;
        for step in &net.lowered.steps {
            match *step {
                Step::GroupNormStats {
                    x,
                    channels,
                    spatial,
                    groups,
                    eps,
                    gamma,
                    beta,
                    out,
                } => {
                    let geom = geometry::groupnorm(1, channels, spatial, groups)?;
                    let partial = self.ptr(net.lowered.gn_partial)?;
                    k.groupnorm_stats(
                        dt,
                        &geom,
                        self.ptr(x)?,
                        self.vec_ptr(gamma)?,
                        self.vec_ptr(beta)?,
                        partial,
                        self.ptr(out)?,
                        channels,
                        groups,
                        eps,
                    )?;
                }
                Step::Normalize {
                    x,
                    scale_shift,
                    channels,
                    spatial,
                    silu,
                    out,
                } => {
                    let geom = geometry::groupnorm(1, channels, spatial, 1)?;
                    k.groupnorm_apply(
                        dt,
                        &geom,
                        self.ptr(x)?,
                        self.ptr(out)?,
                        self.ptr(scale_shift)?,
                        channels,
                        spatial,
                        silu,
                    )?;
                }
                Step::Upsample { x, rows, dims, out } => {
                    k.upsample_nearest2x(dt, self.ptr(x)?, self.ptr(out)?, rows, dims)?;
                }
                Step::Conv {
                    spec,
                    weight,
                    x,
                    out,
                    accumulate,
                } => {
                    let plan = net
                        .plans
                        .get(spec)
                        .ok_or_else(|| CudaError::Shape(format!("missing conv plan {spec}")))?;
                    let w =
                        self.weights
                            .ptr(*self.conv_weights.get(weight).ok_or_else(|| {
                                CudaError::Arena(format!("missing conv weight {weight}"))
                            })?)?;
                    let ws = self.ptr(self.regions.conv_ws)?;
                    // SAFETY: regions come from the validated plan and the arenas outlive the launch.
                    unsafe {
                        plan.forward(
                            &self.dev.dnn,
                            self.ptr(x)?,
                            w,
                            self.ptr(out)?,
                            ws,
                            accumulate,
                        )?
                    };
                }
                Step::AddBias {
                    x,
                    bias,
                    channels,
                    spatial,
                } => {
                    let b = match bias {
                        BiasRef::Param(i) => self.vec_ptr(i)?,
                        BiasRef::Dynamic(i) => {
                            self.ptr(*self.regions.dynamic.get(i).ok_or_else(|| {
                                CudaError::Arena(format!("missing dynamic bias {i}"))
                            })?)?
                        }
                    };
                    k.add_channel_bias(dt, self.ptr(x)?, b, 1, channels, spatial, 0)?;
                }
                Step::Add { out, a, b } => {
                    k.add(
                        dt,
                        self.ptr(out)?,
                        self.ptr(a)?,
                        self.ptr(b)?,
                        out.bytes / 4,
                    )?;
                }
                Step::Copy { from, to } => {
                    let (src, dst) = (self.ptr(from)?, self.ptr(to)?);
                    // SAFETY: both regions lie inside the work arena (checked by `ptr`).
                    unsafe {
                        cudarc::driver::result::memcpy_dtod_async(
                            dst.0,
                            src.0,
                            from.bytes,
                            self.dev.stream().cu_stream(),
                        )
                    }
                    .map_err(CudaError::driver("cuMemcpyDtoDAsync"))?;
                }
                Step::Attention {
                    qkv,
                    residual,
                    channels,
                    tokens,
                    head_dim,
                    out,
                } => {
                    let q = self.ptr(qkv)?;
                    let third = dt.size_bytes() * channels * tokens;
                    let args = AttentionArgs {
                        q,
                        k: q.offset_by(third),
                        v: q.offset_by(2 * third),
                        bias_q: DevPtr::NULL,
                        bias_k: DevPtr::NULL,
                        bias_v: DevPtr::NULL,
                        out: self.ptr(out)?,
                        residual: residual.map_or(Ok(DevPtr::NULL), |r| self.ptr(r))?,
                        batch: 1,
                        channels,
                        tokens,
                        head_dim,
                        qkv_batch_stride: 3 * channels * tokens,
                        out_batch_stride: channels * tokens,
                    };
                    k.attention(dt, &args)?;
                }
                Step::Concat { a, b, out } => {
                    k.concat_channels(
                        dt,
                        self.ptr(out)?,
                        self.ptr(a)?,
                        self.ptr(b)?,
                        a.bytes / 4,
                        b.bytes / 4,
                        1,
                        1,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Time embedding of timesteps[*step] (step NULL: index 0), its MLP and every ResnetBlock's
    /// projection + conv1 bias into the dynamic bias slots, then the UNet.
    pub(super) fn enqueue_unet(&self, timesteps: DevPtr, step: DevPtr) -> Result<(), CudaError> {
        let (net, u) = self
            .unet
            .as_ref()
            .ok_or_else(|| bad_option("the blob has no UNet".into()))?;
        let k = &self.dev.kernels;
        let f32t = DType::F32;
        let (c0, temb) = (u.c0, 4 * u.c0);
        let (e0, e1, e2) = (
            self.ptr(self.regions.e0)?,
            self.ptr(self.regions.e1)?,
            self.ptr(self.regions.e2)?,
        );
        k.timestep_embedding(f32t, e0, timesteps, step, 1, c0)?;
        let l1 = GemmSpec::linear(1, c0, temb)?;
        let l2 = GemmSpec::linear(1, temb, temb)?;
        // SAFETY: all pointers are arena regions sized by the plan for these shapes.
        unsafe {
            self.dev
                .blas
                .gemm(&l1, f32t, self.vec_ptr(u.time_w1)?, e0, e1, 0.0)?
        };
        k.add_channel_bias(f32t, e1, self.vec_ptr(u.time_b1)?, 1, temb, 1, 0)?;
        k.silu(f32t, e1, e1, temb)?;
        unsafe {
            self.dev
                .blas
                .gemm(&l2, f32t, self.vec_ptr(u.time_w2)?, e1, e2, 0.0)?
        };
        k.add_channel_bias(f32t, e2, self.vec_ptr(u.time_b2)?, 1, temb, 1, 0)?;
        k.silu(f32t, e2, e2, temb)?;
        for (slot, r) in u.slots.iter().zip(&self.regions.dynamic) {
            let d = self.ptr(*r)?;
            let spec = GemmSpec::linear(1, temb, slot.cout)?;
            unsafe {
                self.dev
                    .blas
                    .gemm(&spec, f32t, self.vec_ptr(slot.proj_w)?, e2, d, 0.0)?
            };
            k.add_channel_bias(f32t, d, self.vec_ptr(slot.proj_b)?, 1, slot.cout, 1, 0)?;
            k.add_channel_bias(f32t, d, self.vec_ptr(slot.conv_bias)?, 1, slot.cout, 1, 0)?;
        }
        self.enqueue_net(net)
    }
}
