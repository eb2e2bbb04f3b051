//! ldm-cuda: everything CUDA of brats-ldm, for the runtime and the trainer alike.
//!
//! - `kernels/`: one `.cu` per op family with its typed launcher beside it (`kernels/<op>.rs`),
//!   all compiled ahead of time by `build.rs` into one fatbin (`fatbin`), loaded through the
//!   driver API (no NVRTC at run time);
//! - `device`: finding a usable GPU without panicking, context, stream, module, cuBLAS and cuDNN
//!   handles; `arena`: one device allocation carved into regions by byte offsets; `conv`: 3-D
//!   convolutions through cuDNN; `gemm`: matrix products through cuBLAS; `graph`: CUDA graph
//!   capture of a step.
//!
//! Everything that can be computed without a GPU (launch geometry, arena offsets, convolution and
//! GEMM shape math, the kernel table) is plain Rust, compiled and unit-tested without the
//! `device` feature; `device` adds the code that drives a GPU. Constructing a device never
//! panics: missing libraries or GPUs give [`CudaError::DeviceUnavailable`].

pub mod arena;
pub mod conv;
pub mod error;
pub mod gemm;
pub mod geometry;
pub mod kernels;

#[cfg(feature = "device")]
pub mod device;
#[cfg(feature = "device")]
pub mod fatbin;
#[cfg(feature = "device")]
pub mod graph;

pub use arena::{ArenaLayout, DevPtr, Region, ARENA_ALIGN};
pub use conv::Conv3dSpec;
pub use error::CudaError;
pub use gemm::GemmSpec;

#[cfg(feature = "device")]
pub use arena::DeviceArena;
#[cfg(feature = "device")]
pub use conv::ConvPlan;
#[cfg(feature = "device")]
pub use device::{check_available, library_presence, CudaDevice, DeviceInfo, LibraryPresence};
#[cfg(feature = "device")]
pub use graph::StepGraph;
#[cfg(feature = "device")]
pub use kernels::{AttentionArgs, Kernels, NoiseStream};
