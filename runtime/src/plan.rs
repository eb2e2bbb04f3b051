//! `PlanReport`: the memory of a backend's static plan, known before anything large is
//! allocated, in one type for both backends (the CLI prints it and refuses plans that do not fit).

/// Memory of the static plan, known before anything large is allocated. On the CUDA backend
/// the bytes are device bytes: `arena_bytes` holds activations and scratch, `workspace_bytes`
/// the cuDNN and cuBLAS workspaces, and `threads` is 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanReport {
    /// Packed weights and vectors.
    pub weights_bytes: usize,
    /// The activation arena (shared by the UNet and decoder phases).
    pub arena_bytes: usize,
    /// GEMM packing, normalisation slabs, attention scratch.
    pub workspace_bytes: usize,
    /// Sampler state: latent, epsilon, noise, time embedding and dynamic biases.
    pub state_bytes: usize,
    pub total_bytes: usize,
    /// Arena bytes each phase needs.
    pub unet_arena_bytes: usize,
    pub decoder_arena_bytes: usize,
    /// What the same phase would need without buffer reuse (sum of all its buffers).
    pub unet_unshared_bytes: usize,
    pub decoder_unshared_bytes: usize,
    pub unet_ops: usize,
    pub decoder_ops: usize,
    pub threads: usize,
    /// Slab decoding under `max_memory`: slabs, passes and slab depth (0 = whole volume).
    pub decoder_slabs: usize,
    pub decoder_passes: usize,
    pub decoder_slab_planes: usize,
}
