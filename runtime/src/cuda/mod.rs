//! The runtime's CUDA backend (feature "cuda"): the static plan lowered to device steps over one
//! arena (`lower`), the sampler's per-step coefficient tables (`sampler`), and the executor that
//! allocates everything at load and replays a captured CUDA graph per step (`executor`, the
//! runtime and its entry points; `setup`, building it; `layout`, its arenas; `transfer`,
//! host-device copies; `launch`, one network pass; `sampling`, steps, the batch loop, decoding).
//! Kernels and their launchers, the device, the arena, and the cuDNN/cuBLAS wrappers are the
//! `ldm-cuda` crate's (`../cuda`), shared with the trainer.
//!
//! Everything that can be computed without a GPU (lowering, arena offsets, sampler tables) is
//! plain Rust, unit-tested on the host. Constructing a runtime never panics: missing libraries or
//! GPUs give [`CudaError::DeviceUnavailable`].

pub mod executor;
mod launch;
mod layout;
pub mod lower;
pub mod sampler;
mod sampling;
mod setup;
mod transfer;

pub use executor::CudaRuntime;
pub use ldm_cuda::{check_available, library_presence, CudaError, DeviceInfo, LibraryPresence};
