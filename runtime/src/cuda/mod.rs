//! CUDA backend (feature "cuda"): ahead-of-time kernels from `cuda/*.cu` embedded as one fatbin,
//! loaded through the driver API (no NVRTC at run time); cuBLAS GEMMs and cuDNN 3-D convolutions
//! on raw pointers into one device arena laid out from a byte plan; CUDA graph capture of a step.
//!
//! Everything that can be computed without a GPU (launch geometry, arena offsets, convolution and
//! GEMM descriptors, sampler coefficient tables, the kernel list) is plain Rust, unit-tested on
//! the host. Constructing a device never panics: missing libraries or GPUs give
//! [`CudaError::DeviceUnavailable`].

pub mod error;

pub use error::CudaError;
pub mod arena;
pub mod conv;
pub mod device;
pub mod executor;
pub mod fatbin;
pub mod gemm;
pub mod geometry;
pub mod graph;
pub mod kernels;
pub mod lower;
pub mod sampler;

pub use arena::{ArenaLayout, DevPtr, DeviceArena, Region, ARENA_ALIGN};
pub use conv::{Conv3dSpec, ConvPlan};
pub use device::{check_available, library_presence, CudaDevice, DeviceInfo, LibraryPresence};
pub use executor::{CudaPlanReport, CudaRuntime};
pub use gemm::GemmSpec;
pub use graph::StepGraph;
pub use kernels::{AttentionArgs, Kernels, NoiseStream};
