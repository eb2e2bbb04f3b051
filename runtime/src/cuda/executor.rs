//! The CUDA runtime: the CPU's plan (built by `model`, lowered by `lower`) executed on one GPU
//! in fp32. Everything is allocated in `CudaRuntime::new`: one weights arena (conv weights in
//! the blob's PyTorch layout, never packed for the CPU, and every parameter vector), one work
//! arena (the plan's activations shared by the UNet and decoder phases, scratch, cuDNN and
//! cuBLAS workspaces, sampler state and tables). A sampling step (time-embedding MLP, UNet,
//! sampler update, step-counter advance) is captured once as a CUDA graph and replayed;
//! per-step values are read on the device through the step counter. Noise and sampler arithmetic follow the CPU exactly (same Philox stream
//! offsets: volume b from b * 2^40, initial noise [0, n), step s noise [(s + 1) n, (s + 2) n)).
//!
//! Precision: activations and conv weights in fp32, fp16 or bf16 (`Options::precision`), with
//! fp32 accumulation everywhere; the sampler state, GroupNorm statistics, biases and the
//! time-embedding MLP stay fp32. Half-precision activations keep the fp32 plan's byte offsets
//! (each buffer then uses half of its bytes), so the plan's reuse stays valid unchanged.

use crate::error::RuntimeError;
use crate::model::{build_decoder, build_unet, DecoderModel, Params, UnetModel};
use crate::options::{self, Device, Options, Precision, Progress};
use crate::plan::PlanReport;
use crate::sampler::{prediction_code, SamplerPlan};
use crate::weights::WeightSource;
use ldm_weights::{DType, ModelConfig, SamplerKind};

use ldm_cuda::arena::{ArenaLayout, DevPtr, DeviceArena, Region};
use ldm_cuda::conv::{workspace_limit_from_env, AlgoSearch, ConvPlan};
use ldm_cuda::device::CudaDevice;
use ldm_cuda::error::CudaError;
use ldm_cuda::gemm::{GemmSpec, CUBLAS_WORKSPACE_BYTES};
use ldm_cuda::geometry;
use ldm_cuda::graph::StepGraph;
use ldm_cuda::kernels::{AttentionArgs, NoiseStream};
use super::lower::{lower, BiasRef, Lowered, Step};
use super::sampler::timestep_table;

/// Bytes of a normalisation slab handed to the CPU plan builder (only shapes matter here).
const PLAN_SLAB_BYTES: usize = 32 << 20;

/// One network on the device: its lowered steps and a cuDNN plan per distinct conv shape.
struct Net {
    lowered: Lowered,
    plans: Vec<ConvPlan>,
    input: Region,
    output: Region,
}

struct Regions {
    x: Region,
    step: Region,
    timesteps: Region,
    t_single: Region,
    /// fp32 copy of a network output for download (half-precision activations).
    out_f32: Region,
    coefs: Region,
    /// The sampler's state between steps (PNDM: `sampler::PNDM_STATE_VECTORS` latents).
    sampler_state: Region,
    e0: Region,
    e1: Region,
    e2: Region,
    dynamic: Vec<Region>,
    conv_ws: Region,
    cublas_ws: Region,
}

pub struct CudaRuntime {
    graph: Option<StepGraph>,
    unet: Option<(Net, UnetModel)>,
    decoder: Option<(Net, DecoderModel)>,
    regions: Regions,
    conv_weights: Vec<Region>,
    vectors: Vec<Region>,
    weights: DeviceArena,
    work: DeviceArena,
    dev: CudaDevice,
    config: ModelConfig,
    dtype: DType,
    plan: SamplerPlan,
    latent: [usize; 4],
    out_shape: [usize; 4],
    batch: usize,
    report: PlanReport,
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

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Copies an fp32 region straight into `out` (no staging buffer, so decoding allocates nothing).
fn download_f32(
    arena: &DeviceArena,
    dev: &CudaDevice,
    region: Region,
    out: &mut [f32],
) -> Result<(), CudaError> {
    // SAFETY: any byte pattern is a valid f32, and the byte view covers exactly `out`.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(out))
    };
    arena.download(dev.stream(), region, bytes)?;
    for v in out.iter_mut() {
        *v = f32::from_bits(u32::from_le(v.to_bits()));
    }
    Ok(())
}

/// Little-endian bytes of `v` in `dtype` (round to nearest even for the half types).
fn typed_bytes(v: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => f32_bytes(v),
        DType::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        DType::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
    }
}

fn bad_option(msg: String) -> CudaError {
    CudaError::Shape(msg)
}

/// A host-side planning error (model build, schedule), kept typed for `Runtime`'s callers.
fn plan_error(e: RuntimeError) -> CudaError {
    CudaError::Plan(Box::new(e))
}

impl CudaRuntime {
    /// Builds the plan on the host, reports it, then opens the GPU and allocates everything.
    pub fn new(
        config: &ModelConfig,
        store: &dyn WeightSource,
        opts: &Options,
    ) -> Result<Self, CudaError> {
        let ordinal = match opts.device {
            Device::Cuda(i) => i,
            Device::Cpu => return Err(bad_option("CudaRuntime needs Device::Cuda".into())),
        };
        let dtype = match opts.precision {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        };
        if opts.batch == 0 || opts.batch > 1 << 20 {
            return Err(bad_option(format!(
                "batch {} must be in 1..=2^20",
                opts.batch
            )));
        }
        if !(config.scale_factor.is_finite() && config.scale_factor != 0.0) {
            return Err(bad_option(format!(
                "scale factor {} must be finite and non-zero",
                config.scale_factor
            )));
        }
        let latent = opts
            .latent_shape
            .unwrap_or(config.latent_shape.map(|v| v as usize));
        // The CPU's plan: the same timesteps and coefficient rows.
        let plan = options::sampling_plan(config, opts.sampler, opts.steps).map_err(plan_error)?;
        let (timesteps, coefs) = (plan.timesteps.clone(), plan.rows.clone());

        // Host plan: the CPU's graphs, lowered; matrices stay in the blob's layout.
        let mut params = Params::unpacked();
        let unet = match &config.unet {
            Some(c) => Some(
                build_unet(c, store, latent, &mut params, PLAN_SLAB_BYTES).map_err(plan_error)?,
            ),
            None => None,
        };
        let decoder = match &config.decoder {
            Some(c) => Some(
                build_decoder(c, store, latent, &mut params, PLAN_SLAB_BYTES)
                    .map_err(plan_error)?,
            ),
            None => None,
        };
        let unet_low = unet.as_ref().map(|u| lower(&u.graph)).transpose()?;
        let dec_low = decoder.as_ref().map(|d| lower(&d.graph)).transpose()?;
        let out_shape = decoder
            .as_ref()
            .map_or([0; 4], |d| [d.output.c, d.output.d, d.output.h, d.output.w]);

        // Weights layout: every matrix, every vector.
        let mut wl = ArenaLayout::new();
        let conv_weights = params
            .matrices
            .iter()
            .map(|m| wl.push(dtype.size_bytes() * m.data.len()))
            .collect::<Result<Vec<_>, _>>()?;
        let vectors = params
            .vecs
            .iter()
            .map(|v| wl.push(4 * v.len()))
            .collect::<Result<Vec<_>, _>>()?;

        // Open the device now (cuDNN algorithm choice needs it), before any large allocation.
        let dev = CudaDevice::new(ordinal)?;
        let search = AlgoSearch::from_env()?;
        // Most bytes one convolution's cuDNN workspace may take (LDM_CUDNN_WORKSPACE_MIB).
        let workspace_limit = workspace_limit_from_env()?;
        let make_plans = |l: &Lowered| -> Result<Vec<ConvPlan>, CudaError> {
            l.specs
                .iter()
                .map(|&s| ConvPlan::with_search(&dev.dnn, s, dtype, workspace_limit, search))
                .collect()
        };
        let unet_plans = unet_low.as_ref().map(make_plans).transpose()?;
        let dec_plans = dec_low.as_ref().map(make_plans).transpose()?;
        let conv_ws_bytes = unet_plans
            .iter()
            .chain(dec_plans.iter())
            .flat_map(|ps| ps.iter().map(|p| p.workspace_bytes))
            .max()
            .unwrap_or(0);

        // Work arena: activations (max of the two phases), then workspaces and state.
        let act = [unet_low.as_ref(), dec_low.as_ref()]
            .iter()
            .flatten()
            .map(|l| l.total_bytes)
            .max()
            .unwrap_or(0);
        let mut work = ArenaLayout::new();
        let activations = work.push(act)?;
        debug_assert_eq!(activations.offset, 0);
        let n: usize = latent.iter().product();
        let temb = unet.as_ref().map_or(0, |u| 4 * u.c0);
        let conv_ws = work.push(conv_ws_bytes)?;
        let cublas_ws = work.push(CUBLAS_WORKSPACE_BYTES)?;
        let state_start = cublas_ws.end();
        let regions = Regions {
            x: work.push(4 * n)?,
            step: work.push(4)?,
            timesteps: work.push(4 * timesteps.len())?,
            t_single: work.push(4)?,
            out_f32: work.push(4 * n.max(out_shape.iter().product()))?,
            coefs: work.push(4 * coefs.len())?,
            sampler_state: work.push(4 * n * plan.state_vectors())?,
            e0: work.push(temb)?,
            e1: work.push(4 * temb)?,
            e2: work.push(4 * temb)?,
            dynamic: unet.as_ref().map_or(Ok(Vec::new()), |u| {
                u.slots
                    .iter()
                    .map(|s| work.push(4 * s.cout))
                    .collect::<Result<Vec<_>, _>>()
            })?,
            conv_ws,
            cublas_ws,
        };
        let work_total = work.total_bytes()?;
        let weights_total = wl.total_bytes()?;
        // The device plan in the one report type: `arena_bytes` = activations and scratch,
        // `workspace_bytes` = cuDNN + cuBLAS workspaces, per-phase arenas from the lowered plans,
        // `threads` 0 (no host worker pool), no slab decoding.
        let report = PlanReport {
            weights_bytes: weights_total,
            arena_bytes: act,
            workspace_bytes: conv_ws_bytes + CUBLAS_WORKSPACE_BYTES,
            state_bytes: work_total - state_start,
            total_bytes: weights_total + work_total,
            unet_arena_bytes: unet_low.as_ref().map_or(0, |l| l.total_bytes),
            decoder_arena_bytes: dec_low.as_ref().map_or(0, |l| l.total_bytes),
            unet_unshared_bytes: unet.as_ref().map_or(0, |u| 4 * u.graph.total_buffer_len()),
            decoder_unshared_bytes: decoder.as_ref().map_or(0, |d| 4 * d.graph.total_buffer_len()),
            unet_ops: unet.as_ref().map_or(0, |u| u.graph.ops.len()),
            decoder_ops: decoder.as_ref().map_or(0, |d| d.graph.ops.len()),
            threads: 0,
            decoder_slabs: 0,
            decoder_passes: 0,
            decoder_slab_planes: 0,
        };
        if let Some(limit) = opts.max_memory {
            let needed = report.total_bytes - report.weights_bytes;
            if needed > limit {
                return Err(CudaError::MemoryLimit { needed, limit });
            }
        }

        // Allocate and upload.
        let mut weights = DeviceArena::new(dev.stream(), &wl)?;
        for (m, r) in params.matrices.iter().zip(&conv_weights) {
            weights.upload(dev.stream(), *r, &typed_bytes(&m.data, dtype))?;
        }
        for (v, r) in params.vecs.iter().zip(&vectors) {
            weights.upload(dev.stream(), *r, &f32_bytes(v))?;
        }
        let mut work_arena = DeviceArena::new(dev.stream(), &work)?;
        work_arena.upload(
            dev.stream(),
            regions.timesteps,
            &f32_bytes(&timestep_table(&timesteps)),
        )?;
        work_arena.upload(dev.stream(), regions.coefs, &f32_bytes(&coefs))?;
        // SAFETY: the cuBLAS workspace region lives as long as the work arena, which outlives
        // every GEMM (field order drops the graph first).
        unsafe {
            dev.blas
                .set_workspace(work_arena.ptr(regions.cublas_ws)?, CUBLAS_WORKSPACE_BYTES)?
        };

        let net = |l: Lowered,
                   plans: Vec<ConvPlan>,
                   g: &crate::graph::Graph,
                   i: usize,
                   o: usize|
         -> Result<Net, CudaError> {
            let region = |b: usize| -> Result<Region, CudaError> {
                let info = g
                    .bufs
                    .get(b)
                    .ok_or_else(|| CudaError::Arena(format!("missing buffer {b}")))?;
                Ok(Region {
                    offset: 4 * info.offset,
                    bytes: 4 * info.len,
                })
            };
            Ok(Net {
                lowered: l,
                plans,
                input: region(i)?,
                output: region(o)?,
            })
        };
        let unet = match (unet, unet_low, unet_plans) {
            (Some(u), Some(l), Some(p)) => {
                let nt = net(l, p, &u.graph, u.input.buf, u.output.buf)?;
                Some((nt, u))
            }
            _ => None,
        };
        let decoder = match (decoder, dec_low, dec_plans) {
            (Some(d), Some(l), Some(p)) => {
                let nt = net(l, p, &d.graph, d.input.buf, d.output.buf)?;
                Some((nt, d))
            }
            _ => None,
        };
        let mut rt = CudaRuntime {
            graph: None,
            unet,
            decoder,
            regions,
            conv_weights,
            vectors,
            weights,
            work: work_arena,
            dev,
            config: config.clone(),
            dtype,
            plan,
            latent,
            out_shape,
            batch: opts.batch,
            report,
        };
        // Deterministic samplers draw no noise: their step graph is captured once, here.
        if !rt.plan.stochastic && rt.unet.is_some() {
            rt.graph = Some(rt.capture_step(NoiseStream {
                seed: 0,
                offset: 0,
                stride: 0,
            })?);
        }
        Ok(rt)
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

    fn ptr(&self, r: Region) -> Result<DevPtr, CudaError> {
        self.work.ptr(r)
    }

    fn vec_ptr(&self, i: usize) -> Result<DevPtr, CudaError> {
        let r = *self
            .vectors
            .get(i)
            .ok_or_else(|| CudaError::Arena(format!("missing parameter vector {i}")))?;
        self.weights.ptr(r)
    }

    /// Enqueues the steps of one lowered network.
    fn enqueue_net(&self, net: &Net) -> Result<(), CudaError> {
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
    fn enqueue_unet(&self, timesteps: DevPtr, step: DevPtr) -> Result<(), CudaError> {
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
            SamplerKind::Ddim => k.ddim_step(self.dtype, x, eps, none, coefs, step, pred, p.clip, noise, n)?,
            SamplerKind::Ddpm => k.ddpm_step(self.dtype, x, eps, none, coefs, step, pred, p.clip, noise, n)?,
            SamplerKind::Pndm => {
                let state = self.ptr(self.regions.sampler_state)?;
                k.pndm_step(self.dtype, x, eps, none, coefs, step, pred, state, n)?
            }
        }
        k.step_advance(step)
    }

    fn capture_step(&self, noise: NoiseStream) -> Result<StepGraph, CudaError> {
        StepGraph::capture(self.dev.stream(), || self.enqueue_step(noise))
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
        let n: usize = self.latent.iter().product();
        if noise.len() != self.batch * n {
            return Err(bad_option(format!(
                "initial noise holds {} floats, expected {}",
                noise.len(),
                self.batch * n
            )));
        }
        self.run_batch(seed, Some(noise), out, progress)
    }

    /// Samples and decodes every volume of the batch: initial latent from Philox (`init` None)
    /// or uploaded from `init`, then the step graph replayed once per timestep.
    fn run_batch(
        &mut self,
        seed: u64,
        init: Option<&[f32]>,
        out: &mut [f32],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), CudaError> {
        if self.unet.is_none() {
            return Err(bad_option("the blob has no UNet".into()));
        }
        if self.decoder.is_none() {
            return Err(bad_option("the blob has no decoder".into()));
        }
        let vol: usize = self.out_shape.iter().product();
        if out.len() != self.batch * vol {
            return Err(bad_option(format!(
                "output holds {} floats, expected {}",
                out.len(),
                self.batch * vol
            )));
        }
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

    /// One UNet evaluation eps = unet(x, t), for parity checks against the CPU. Overwrites the
    /// sampler state (the next `generate` starts from fresh noise anyway).
    pub fn unet_forward(&mut self, x: &[f32], t: u32, eps: &mut [f32]) -> Result<(), CudaError> {
        let n: usize = self.latent.iter().product();
        if x.len() != n || eps.len() != n {
            return Err(bad_option(format!(
                "UNet input/output must hold {n} floats"
            )));
        }
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

    /// Decodes one latent (divided by the scale factor) into `out`, for parity checks.
    pub fn decode(&mut self, latent: &[f32], out: &mut [f32]) -> Result<(), CudaError> {
        let n: usize = self.latent.iter().product();
        let vol: usize = self.out_shape.iter().product();
        if latent.len() != n || out.len() != vol {
            return Err(bad_option(format!(
                "decode needs {n} latent floats and {vol} output floats"
            )));
        }
        self.dev.bind_to_thread()?;
        self.work
            .upload(self.dev.stream(), self.regions.x, &f32_bytes(latent))?;
        self.decode_state(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
