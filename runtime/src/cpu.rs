//! The CPU backend of `Runtime`: from the options `Runtime` resolved, builds and plans both
//! graphs, allocates everything once, and runs samplers, the UNet and the decoder with no further
//! allocation, on input `Runtime` has checked.

use crate::error::RuntimeError;
use crate::exec::{self, Workspaces};
use crate::lower_cpu::{ConvWorkspaces, CpuParams};
use crate::model::{build_decoder, build_unet, DecoderModel, Params, UnetModel};
use crate::options::{Options, Progress, Resolved};
use crate::philox::philox_normal;
use crate::pool::Pool;
use crate::plan::PlanReport;
use crate::sampler::{ddim_update, ddpm_update, pndm_update, SamplerPlan};
use crate::schedule::Schedule;
use ldm_weights::SamplerKind;
use crate::slab::SlabPlan;
use crate::weights::WeightSource;
use crate::{attention, conv, gemm};
use ldm_weights::ModelConfig;

/// Default bytes of one normalisation slab (input planes normalised ahead of a convolution).
const SLAB_BYTES: usize = 32 << 20;

/// The CPU runtime; `crate::Runtime` wraps it (and the CUDA backend) behind one API.
pub(crate) struct CpuRuntime {
    config: ModelConfig,
    batch: usize,
    pool: Pool,
    params: CpuParams,
    unet: Option<UnetModel>,
    decoder: Option<DecoderModel>,
    arena: Vec<f32>,
    ws: Workspaces,
    dynamic: Vec<Vec<f32>>,
    emb: [Vec<f32>; 3],
    schedule: Schedule,
    plan: SamplerPlan,
    latent: [usize; 4],
    out_shape: [usize; 4],
    x: Vec<f32>,
    eps: Vec<f32>,
    noise: Vec<f32>,
    /// The sampler's state between steps (PNDM's past outputs; empty for DDIM and DDPM).
    sampler_state: Vec<f32>,
    report: PlanReport,
    slab: Option<SlabPlan>,
    slab_stats: Vec<f32>,
    slab_moments: Vec<f64>,
}

fn numel(s: [usize; 4]) -> usize {
    s.iter().product()
}

/// A zeroed buffer that fails with an error instead of aborting when memory is short. It comes
/// from `alloc_zeroed` (calloc), so pages become resident only when first used.
fn try_vec(len: usize, what: &'static str) -> Result<Vec<f32>, RuntimeError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(len).map_err(|_| RuntimeError::Overflow(what))?;
    // SAFETY: non-zero size; the pointer is checked; zeroed f32s are valid values; the Vec takes
    // ownership with the same layout (capacity = len).
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut f32;
        if p.is_null() {
            return Err(RuntimeError::OutOfMemory { what, bytes: layout.size() });
        }
        Ok(Vec::from_raw_parts(p, len, len))
    }
}

/// A CPU runtime planned but not yet allocated: graphs built, weights packed, every buffer's
/// size known (`report`); `allocate` then takes the arena, workspaces and sampler state.
pub(crate) struct CpuPlan {
    config: ModelConfig,
    batch: usize,
    threads: usize,
    params: CpuParams,
    slab_bytes: usize,
    unet: Option<UnetModel>,
    decoder: Option<DecoderModel>,
    schedule: Schedule,
    plan: SamplerPlan,
    latent: [usize; 4],
    out_shape: [usize; 4],
    report: PlanReport,
    slab: Option<SlabPlan>,
    arena_len: usize,
    pack_len: usize,
    shared_len: usize,
    norm_len: usize,
    attn_len: usize,
    temb: usize,
}

impl CpuPlan {
    /// Builds and plans both graphs from any `WeightSource` and lowers them for the CPU (packing
    /// the weights) with the options as `Runtime` resolved them; allocates nothing else.
    pub fn new(config: &ModelConfig, store: &dyn WeightSource, opts: &Options, resolved: Resolved) -> Result<CpuPlan, RuntimeError> {
        let Resolved { latent, schedule, plan } = resolved;
        let threads = opts.threads.map_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), |t| t.min(1024));
        gemm::init()?;
        let conv_mode = conv::winograd::init()?;
        let slab_bytes = opts.max_memory.map_or(SLAB_BYTES, |m| (m / 16).clamp(1 << 16, SLAB_BYTES));
        let mut neutral = Params::default();
        let unet = match &config.unet {
            Some(c) => Some(build_unet(c, store, latent, &mut neutral)?),
            None => None,
        };
        let decoder = match &config.decoder {
            Some(c) => Some(build_decoder(c, store, latent, &mut neutral)?),
            None => None,
        };
        let out_shape = match &decoder {
            Some(d) => [d.output.c, d.output.d, d.output.h, d.output.w],
            None => [0; 4],
        };
        let graphs: Vec<_> = unet.iter().map(|u| &u.graph).chain(decoder.iter().map(|d| &d.graph)).collect();
        let params = CpuParams::lower(neutral, &graphs, conv_mode);
        let conv_ws = ConvWorkspaces::of(&graphs, slab_bytes, conv_mode)?;
        let mut arena_len = graphs.iter().map(|g| g.arena_len).max().unwrap_or(0);
        let norm_len = conv_ws.norm;
        let max_dh = config
            .unet
            .as_ref()
            .map(|u| u.num_head_channels.iter().copied().max().unwrap_or(0) as usize)
            .unwrap_or(0);
        let shared_len = conv_ws.shared;
        let pack_len = threads * conv_ws.pack_per_thread + shared_len;
        let attn_len = if max_dh > 0 { threads * attention::ws_len(max_dh) } else { 0 };
        let n = numel(latent);
        let temb = unet.as_ref().map_or(0, |u| 4 * u.c0);
        let dyn_len: usize = unet.as_ref().map_or(0, |u| u.slots.iter().map(|s| s.cout).sum());
        let state_floats = (3 + plan.state_vectors()) * n + 3 * temb + dyn_len;
        let ws_floats = pack_len + norm_len + attn_len;
        let unet_arena = unet.as_ref().map_or(0, |u| u.graph.arena_len);
        let mut report = PlanReport {
            weights_bytes: params.bytes(),
            arena_bytes: arena_len * 4,
            workspace_bytes: ws_floats * 4,
            state_bytes: state_floats * 4,
            total_bytes: params.bytes() + (arena_len + ws_floats + state_floats) * 4,
            unet_arena_bytes: unet_arena * 4,
            decoder_arena_bytes: decoder.as_ref().map_or(0, |d| d.graph.arena_len * 4),
            unet_unshared_bytes: unet.as_ref().map_or(0, |u| u.graph.total_buffer_len() * 4),
            decoder_unshared_bytes: decoder.as_ref().map_or(0, |d| d.graph.total_buffer_len() * 4),
            unet_ops: unet.as_ref().map_or(0, |u| u.graph.ops.len()),
            decoder_ops: decoder.as_ref().map_or(0, |d| d.graph.ops.len()),
            threads,
            decoder_slabs: 0,
            decoder_passes: 0,
            decoder_slab_planes: 0,
        };
        let mut slab = None;
        if let Some(limit) = opts.max_memory {
            let needed = report.total_bytes - report.weights_bytes;
            if needed > limit {
                // Decode in slabs: the largest decoder arena that still fits.
                let Some(d) = &decoder else { return Err(RuntimeError::MemoryLimit { needed, limit }) };
                let d_groups = config.decoder.as_ref().map_or(0, |c| c.norm_num_groups as usize);
                let fixed = (ws_floats + state_floats) * 4;
                let budget = limit.saturating_sub(fixed) / 4;
                let plan = SlabPlan::choose(&d.graph, d.output.buf, budget)
                    .map_err(|_| RuntimeError::MemoryLimit { needed, limit })?;
                let dec_arena = plan.arena_len();
                // statistics store (f32) + moment accumulators (2 f64 per group = 4 floats)
                let extra = plan.stats_len() + 4 * d_groups;
                let arena = unet_arena.max(dec_arena);
                report.decoder_arena_bytes = dec_arena * 4;
                report.arena_bytes = arena * 4;
                report.state_bytes = (state_floats + extra) * 4;
                report.total_bytes = params.bytes() + (arena + ws_floats + state_floats + extra) * 4;
                report.decoder_slabs = plan.slabs;
                report.decoder_passes = plan.passes_count;
                report.decoder_slab_planes = plan.slab;
                let needed = report.total_bytes - report.weights_bytes;
                if needed > limit {
                    return Err(RuntimeError::MemoryLimit { needed, limit });
                }
                arena_len = arena;
                slab = Some(plan);
            }
        }
        Ok(CpuPlan {
            config: config.clone(),
            batch: opts.batch,
            threads,
            params,
            slab_bytes,
            unet,
            decoder,
            schedule,
            plan,
            latent,
            out_shape,
            report,
            slab,
            arena_len,
            pack_len,
            shared_len,
            norm_len,
            attn_len,
            temb,
        })
    }

    pub fn report(&self) -> &PlanReport {
        &self.report
    }
    pub fn output_shape(&self) -> [usize; 4] {
        self.out_shape
    }

    /// Starts the worker pool and allocates the arena, workspaces and sampler state.
    pub fn allocate(self) -> Result<CpuRuntime, RuntimeError> {
        let CpuPlan {
            config,
            batch,
            threads,
            params,
            slab_bytes,
            unet,
            decoder,
            schedule,
            plan,
            latent,
            out_shape,
            report,
            slab,
            arena_len,
            pack_len,
            shared_len,
            norm_len,
            attn_len,
            temb,
        } = self;
        let n = numel(latent);
        let plan_state = plan.state_vectors() * n;
        let mut params = params;
        params.transform_winograd();
        let pool = Pool::new(threads)?;
        let dynamic = unet.as_ref().map_or(Vec::new(), |u| u.slots.iter().map(|s| vec![0f32; s.cout]).collect());
        Ok(CpuRuntime {
            slab_moments: vec![0f64; if slab.is_some() { 2 * config.decoder.as_ref().map_or(0, |d| d.norm_num_groups as usize) } else { 0 }],
            config,
            batch,
            pool,
            params,
            arena: try_vec(arena_len, "arena")?,
            ws: Workspaces {
                pack: try_vec(pack_len - shared_len, "pack workspace")?,
                shared: try_vec(shared_len, "shared pack workspace")?,
                norm: try_vec(norm_len, "norm workspace")?,
                slab_bytes,
                attn: try_vec(attn_len, "attention workspace")?,
            },
            unet,
            decoder,
            dynamic,
            emb: [vec![0f32; temb / 4], vec![0f32; temb], vec![0f32; temb]],
            schedule,
            plan,
            latent,
            out_shape,
            x: try_vec(n, "latent")?,
            eps: try_vec(n, "epsilon")?,
            noise: try_vec(n, "noise")?,
            sampler_state: try_vec(plan_state, "sampler state")?,
            report,
            slab_stats: try_vec(slab.as_ref().map_or(0, |p| p.stats_len()), "slab statistics")?,
            slab,
        })
    }
}

impl CpuRuntime {
    pub fn plan(&self) -> &PlanReport {
        &self.report
    }
    pub fn output_shape(&self) -> [usize; 4] {
        self.out_shape
    }
    pub fn latent_shape(&self) -> [usize; 4] {
        self.latent
    }
    pub fn timesteps(&self) -> &[u32] {
        &self.plan.timesteps
    }
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn flops_per_unet_step(&self) -> f64 {
        self.unet.as_ref().map_or(0.0, |u| u.graph.flops)
    }
    pub fn flops_per_decode(&self) -> f64 {
        self.decoder.as_ref().map_or(0.0, |d| d.graph.flops)
    }

    /// Evaluates the time embedding MLP and every ResnetBlock's projection for timestep `t`.
    fn time_embedding(&mut self, t: u32) {
        let Some(u) = &self.unet else { return };
        let v = &self.params.vecs;
        let half = u.c0 / 2;
        let [e0, e1, e2] = &mut self.emb;
        let ln = -(10000f64.ln()) as f32;
        for i in 0..half {
            let expo = ln * i as f32;
            let freq = ((expo / half as f32) as f64).exp() as f32;
            let arg = (t as f32 * freq) as f64;
            e0[i] = arg.cos() as f32;
            e0[half + i] = arg.sin() as f32;
        }
        let linear = |w: &[f32], b: &[f32], x: &[f32], y: &mut [f32], act: bool| {
            for (o, yo) in y.iter_mut().enumerate() {
                let row = &w[o * x.len()..(o + 1) * x.len()];
                let s: f64 = row.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
                let r = (s + b[o] as f64) as f32;
                *yo = if act { crate::fastmath::silu(r) } else { r };
            }
        };
        linear(&v[u.time_w1], &v[u.time_b1], e0, e1, true);
        // e2 = SiLU(time_embed(...)): every ResnetBlock applies SiLU before its projection.
        linear(&v[u.time_w2], &v[u.time_b2], e1, e2, true);
        for (slot, d) in u.slots.iter().zip(self.dynamic.iter_mut()) {
            let w = &v[slot.proj_w];
            let pb = &v[slot.proj_b];
            let cb = &v[slot.conv_bias];
            for (o, y) in d.iter_mut().enumerate() {
                let row = &w[o * e2.len()..(o + 1) * e2.len()];
                let s: f64 = row.iter().zip(e2.iter()).map(|(&a, &b)| a as f64 * b as f64).sum();
                *y = cb[o] + (s + pb[o] as f64) as f32;
            }
        }
    }

    /// One UNet evaluation: `eps_out = unet(x, t)`.
    pub fn unet_forward(&mut self, x: &[f32], t: u32, eps_out: &mut [f32]) {
        self.unet_inner(Some(x), t, Some(eps_out));
    }

    /// Runs the UNet on `x` (or on `self.x` when None) into `out` (or `self.eps`).
    fn unet_inner(&mut self, x: Option<&[f32]>, t: u32, out: Option<&mut [f32]>) {
        self.time_embedding(t);
        let Some(u) = &self.unet else { return };
        let g = &u.graph;
        exec::buffer(g, &mut self.arena, u.input.buf).copy_from_slice(x.unwrap_or(&self.x));
        exec::run(&self.pool, g, &self.params, &self.dynamic, &mut self.arena, &mut self.ws);
        let res = exec::buffer(g, &mut self.arena, u.output.buf);
        match out {
            Some(o) => o.copy_from_slice(res),
            None => self.eps.copy_from_slice(res),
        }
    }

    /// Decodes one latent (divided by the blob's scale factor first) into `out`.
    pub fn decode(&mut self, latent: &[f32], out: &mut [f32]) {
        self.decode_inner(Some(latent), out);
    }

    fn decode_inner(&mut self, latent: Option<&[f32]>, out: &mut [f32]) {
        let Some(d) = &self.decoder else { return };
        let g = &d.graph;
        let s = self.config.scale_factor;
        let src = latent.unwrap_or(&self.x);
        if let Some(p) = &self.slab {
            for (y, &v) in p.prefix_buffer(&mut self.arena, d.input.buf).iter_mut().zip(src) {
                *y = v / s;
            }
            p.run(&self.pool, &self.params, &mut self.arena, &mut self.slab_stats, &mut self.slab_moments, &mut self.ws, out);
            return;
        }
        for (y, &v) in exec::buffer(g, &mut self.arena, d.input.buf).iter_mut().zip(src) {
            *y = v / s;
        }
        exec::run(&self.pool, g, &self.params, &self.dynamic, &mut self.arena, &mut self.ws);
        out.copy_from_slice(exec::buffer(g, &mut self.arena, d.output.buf));
    }

    /// Generates `batch` volumes from `seed`. Volume `b` uses the Philox stream of `seed` from
    /// offset `b * 2^40`: its initial noise is elements `[0, n)`, the noise of step `s`
    /// (stochastic samplers) elements `[(s + 1) n, (s + 2) n)`, with `n` the latent size.
    pub fn generate(&mut self, seed: u64, out: &mut [f32], progress: &mut dyn FnMut(Progress)) {
        let vol = numel(self.out_shape);
        for b in 0..self.batch {
            let base = (b as u64) << 40;
            philox_normal(seed, base, &mut self.x);
            self.sample(seed, base, &mut out[b * vol..(b + 1) * vol], progress);
        }
    }

    /// `generate_from_noise` with the step-noise seed given.
    pub fn generate_from_noise_seeded(
        &mut self,
        noise: &[f32],
        seed: u64,
        out: &mut [f32],
        progress: &mut dyn FnMut(Progress),
    ) {
        let n = numel(self.latent);
        let vol = numel(self.out_shape);
        for b in 0..self.batch {
            self.x.copy_from_slice(&noise[b * n..(b + 1) * n]);
            self.sample(seed, (b as u64) << 40, &mut out[b * vol..(b + 1) * vol], progress);
        }
    }

    /// Runs only the sampler from `noise`, leaving the latent after `steps` steps (all when None)
    /// in `latent_out` (no decoding, no scale factor).
    pub fn sample_latent(&mut self, noise: &[f32], seed: u64, steps: Option<usize>, latent_out: &mut [f32]) {
        self.x.copy_from_slice(noise);
        let steps = steps.unwrap_or(self.plan.timesteps.len()).min(self.plan.timesteps.len());
        for i in 0..steps {
            self.step(i, seed, 0);
        }
        latent_out.copy_from_slice(&self.x);
    }

    /// Sampling step `i`: the UNet at the step's timestep, then the sampler's update; DDPM and
    /// DDIM with eta > 0 draw the step's noise at offset `base + (i + 1) n` of the stream.
    fn step(&mut self, i: usize, seed: u64, base: u64) {
        let t = self.plan.timesteps[i];
        self.unet_inner(None, t, None);
        let n = self.x.len() as u64;
        let noise_off = base + (i as u64 + 1) * n;
        let p = &self.plan;
        let row = p.row(i);
        match p.kind {
            SamplerKind::Ddim => {
                let noise = if p.stochastic {
                    philox_normal(seed, noise_off, &mut self.noise);
                    Some(&self.noise[..])
                } else {
                    None
                };
                ddim_update(row, p.prediction, p.clip, &mut self.x, &self.eps, noise);
            }
            SamplerKind::Ddpm => {
                philox_normal(seed, noise_off, &mut self.noise);
                ddpm_update(row, p.prediction, p.clip, &mut self.x, &self.eps, &self.noise);
            }
            SamplerKind::Pndm => pndm_update(row, p.prediction, &mut self.x, &self.eps, &mut self.sampler_state),
        }
    }

    fn sample(&mut self, seed: u64, base: u64, out: &mut [f32], progress: &mut dyn FnMut(Progress)) {
        let total = self.plan.timesteps.len();
        for i in 0..total {
            progress(Progress::Step { index: i, total, timestep: self.plan.timesteps[i] });
            self.step(i, seed, base);
        }
        progress(Progress::Decoding);
        self.decode_inner(None, out);
    }

    /// The training schedule (betas, alphas, cumulative products).
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}
