//! The CUDA runtime's two arenas laid out on the host: the weights arena (every convolution
//! matrix in the run's precision, every parameter vector in fp32) and the work arena
//! (activations shared by the UNet and decoder phases from offset 0, the cuDNN and cuBLAS
//! workspaces, then the state: latent, step counter, timestep and coefficient tables, the fp32
//! download buffer, the sampler's state, time-embedding vectors and the ResnetBlocks' dynamic
//! biases); and the plan report of their bytes.

use super::lower::Lowered;
use crate::model::{DecoderModel, Params, UnetModel};
use crate::plan::PlanReport;
use ldm_cuda::arena::{ArenaLayout, Region};
use ldm_cuda::error::CudaError;
use ldm_cuda::gemm::CUBLAS_WORKSPACE_BYTES;
use ldm_weights::DType;

/// The work arena's regions beyond the activations.
pub(super) struct Regions {
    pub(super) x: Region,
    pub(super) step: Region,
    pub(super) timesteps: Region,
    pub(super) t_single: Region,
    /// fp32 copy of a network output for download (half-precision activations).
    pub(super) out_f32: Region,
    pub(super) coefs: Region,
    /// The sampler's state between steps (PNDM: `sampler::PNDM_STATE_VECTORS` latents).
    pub(super) sampler_state: Region,
    pub(super) e0: Region,
    pub(super) e1: Region,
    pub(super) e2: Region,
    pub(super) dynamic: Vec<Region>,
    pub(super) conv_ws: Region,
    pub(super) cublas_ws: Region,
}

/// The weights arena: one region per convolution matrix and per parameter vector.
pub(super) struct WeightsLayout {
    pub(super) layout: ArenaLayout,
    pub(super) conv_weights: Vec<Region>,
    pub(super) vectors: Vec<Region>,
}

/// Every matrix (in `dtype`), every vector (fp32).
pub(super) fn weights_layout(params: &Params, dtype: DType) -> Result<WeightsLayout, CudaError> {
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
    Ok(WeightsLayout {
        layout: wl,
        conv_weights,
        vectors,
    })
}

/// What the work arena must hold.
pub(super) struct WorkSizes<'a> {
    /// Bytes of the larger phase's activations.
    pub(super) activations: usize,
    /// Bytes of the largest cuDNN workspace.
    pub(super) conv_workspace: usize,
    pub(super) latent: [usize; 4],
    pub(super) out_shape: [usize; 4],
    pub(super) timesteps: usize,
    /// Floats of the sampler's coefficient rows.
    pub(super) coefs: usize,
    /// Latents of sampler state (PNDM's past outputs).
    pub(super) state_vectors: usize,
    pub(super) unet: Option<&'a UnetModel>,
}

/// The work arena and where its state begins (everything after the workspaces).
pub(super) struct WorkLayout {
    pub(super) layout: ArenaLayout,
    pub(super) regions: Regions,
    pub(super) state_start: usize,
}

/// Activations first (offset 0), then workspaces, then state.
pub(super) fn work_layout(s: &WorkSizes) -> Result<WorkLayout, CudaError> {
    let mut work = ArenaLayout::new();
    let activations = work.push(s.activations)?;
    debug_assert_eq!(activations.offset, 0);
    let n: usize = s.latent.iter().product();
    let temb = s.unet.map_or(0, |u| 4 * u.c0);
    let conv_ws = work.push(s.conv_workspace)?;
    let cublas_ws = work.push(CUBLAS_WORKSPACE_BYTES)?;
    let state_start = cublas_ws.end();
    let regions = Regions {
        x: work.push(4 * n)?,
        step: work.push(4)?,
        timesteps: work.push(4 * s.timesteps)?,
        t_single: work.push(4)?,
        out_f32: work.push(4 * n.max(s.out_shape.iter().product()))?,
        coefs: work.push(4 * s.coefs)?,
        sampler_state: work.push(4 * n * s.state_vectors)?,
        e0: work.push(temb)?,
        e1: work.push(4 * temb)?,
        e2: work.push(4 * temb)?,
        dynamic: s.unet.map_or(Ok(Vec::new()), |u| {
            u.slots
                .iter()
                .map(|s| work.push(4 * s.cout))
                .collect::<Result<Vec<_>, _>>()
        })?,
        conv_ws,
        cublas_ws,
    };
    Ok(WorkLayout {
        layout: work,
        regions,
        state_start,
    })
}

/// The device plan in the one report type: `arena_bytes` = activations and scratch,
/// `workspace_bytes` = cuDNN + cuBLAS workspaces, per-phase arenas from the lowered plans,
/// `threads` 0 (no host worker pool), no slab decoding.
pub(super) fn plan_report(
    weights: &WeightsLayout,
    work: &WorkLayout,
    sizes: &WorkSizes,
    lowered: [Option<&Lowered>; 2],
    decoder: Option<&DecoderModel>,
) -> Result<PlanReport, CudaError> {
    let work_total = work.layout.total_bytes()?;
    let weights_total = weights.layout.total_bytes()?;
    let [unet_low, dec_low] = lowered;
    let unet = sizes.unet;
    Ok(PlanReport {
        weights_bytes: weights_total,
        arena_bytes: sizes.activations,
        workspace_bytes: sizes.conv_workspace + CUBLAS_WORKSPACE_BYTES,
        state_bytes: work_total - work.state_start,
        total_bytes: weights_total + work_total,
        unet_arena_bytes: unet_low.map_or(0, |l| l.total_bytes),
        decoder_arena_bytes: dec_low.map_or(0, |l| l.total_bytes),
        unet_unshared_bytes: unet.map_or(0, |u| 4 * u.graph.total_buffer_len()),
        decoder_unshared_bytes: decoder.map_or(0, |d| 4 * d.graph.total_buffer_len()),
        unet_ops: unet.map_or(0, |u| u.graph.ops.len()),
        decoder_ops: decoder.map_or(0, |d| d.graph.ops.len()),
        threads: 0,
        decoder_slabs: 0,
        decoder_passes: 0,
        decoder_slab_planes: 0,
    })
}
