//! Building a `CudaRuntime` from options `Runtime` resolved: the backend-neutral graphs built on
//! the host and lowered to GPU steps, the arenas laid out, the GPU opened and a cuDNN plan chosen per convolution
//! shape, the plan checked against `max_memory`, then everything allocated and uploaded once,
//! and a deterministic sampler's step graph captured.

use super::executor::{bad_option, plan_error, CudaRuntime, Net};
use super::layout::{plan_report, weights_layout, work_layout, WorkSizes};
use super::lower::{lower, Lowered};
use super::sampler::timestep_table;
use super::transfer::{f32_bytes, typed_bytes};
use crate::model::{build_decoder, build_unet, Params};
use crate::options::{Device, Options, Precision, Resolved};
use crate::weights::WeightSource;
use ldm_cuda::arena::{DeviceArena, Region};
use ldm_cuda::conv::{workspace_limit_from_env, AlgoSearch, ConvPlan};
use ldm_cuda::device::CudaDevice;
use ldm_cuda::error::CudaError;
use ldm_cuda::gemm::CUBLAS_WORKSPACE_BYTES;
use ldm_cuda::kernels::NoiseStream;
use ldm_weights::{DType, ModelConfig};

impl CudaRuntime {
    /// Builds the plan on the host, reports it, then opens the GPU and allocates everything;
    /// `resolved` is what `options::resolve` made of `opts` for this model.
    pub(crate) fn from_resolved(
        config: &ModelConfig,
        store: &dyn WeightSource,
        opts: &Options,
        resolved: Resolved,
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
        // The sampler plan the CPU runs: the same timesteps and coefficient rows.
        let Resolved { latent, plan, .. } = resolved;
        let (timesteps, coefs) = (plan.timesteps.clone(), plan.rows.clone());

        // Host plan: the backend-neutral graphs, lowered; matrices stay in the blob's layout.
        let mut params = Params::default();
        let unet = match &config.unet {
            Some(c) => Some(build_unet(c, store, latent, &mut params).map_err(plan_error)?),
            None => None,
        };
        let decoder = match &config.decoder {
            Some(c) => Some(build_decoder(c, store, latent, &mut params).map_err(plan_error)?),
            None => None,
        };
        let unet_low = unet.as_ref().map(|u| lower(&u.graph)).transpose()?;
        let dec_low = decoder.as_ref().map(|d| lower(&d.graph)).transpose()?;
        let out_shape = decoder
            .as_ref()
            .map_or([0; 4], |d| [d.output.c, d.output.d, d.output.h, d.output.w]);

        let wl = weights_layout(&params, dtype)?;

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
        let sizes = WorkSizes {
            activations: act,
            conv_workspace: conv_ws_bytes,
            latent,
            out_shape,
            timesteps: timesteps.len(),
            coefs: coefs.len(),
            state_vectors: plan.state_vectors(),
            unet: unet.as_ref(),
        };
        let work = work_layout(&sizes)?;
        let report = plan_report(
            &wl,
            &work,
            &sizes,
            [unet_low.as_ref(), dec_low.as_ref()],
            decoder.as_ref(),
        )?;
        if let Some(limit) = opts.max_memory {
            let needed = report.total_bytes - report.weights_bytes;
            if needed > limit {
                return Err(CudaError::MemoryLimit { needed, limit });
            }
        }
        let regions = work.regions;

        // Allocate and upload.
        let mut weights = DeviceArena::new(dev.stream(), &wl.layout)?;
        for (m, r) in params.matrices.iter().zip(&wl.conv_weights) {
            weights.upload(dev.stream(), *r, &typed_bytes(&m.data, dtype))?;
        }
        for (v, r) in params.vecs.iter().zip(&wl.vectors) {
            weights.upload(dev.stream(), *r, &f32_bytes(v))?;
        }
        let mut work_arena = DeviceArena::new(dev.stream(), &work.layout)?;
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
            conv_weights: wl.conv_weights,
            vectors: wl.vectors,
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
}
