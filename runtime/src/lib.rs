//! ldm-runtime: loads a blob, plans every buffer up front, runs the sampler and the decoder.
//!
//! Modules: `runtime` (the public `Runtime`, dispatching to a backend), `cpu` (the CPU backend),
//! `cuda` (the CUDA backend, feature "cuda"), `model` (builders of the backend-neutral graphs of
//! the decoder and the UNet), `graph` (the neutral graph and its arena offsets), `lower_cpu` (its
//! CPU lowering: packed weights, slabs, workspaces), `exec` (CPU executor), kernels (`conv`, `gemm`,
//! `norm`, `attention`, `fastmath`), `schedule` (noise schedules, timesteps), `sampler` (DDIM/DDPM/PNDM
//! plans and updates), `philox` (noise), `pool` (threads), `arguments` (the front ends' argument
//! rules, shared by the CLI and the Python package).

pub mod arguments;
pub mod attention;
pub mod capi;
pub mod conv;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod exec;
pub mod fastmath;
pub mod gemm;
pub mod graph;
pub mod lower_cpu;
mod inputs;
pub mod model;
pub mod norm;
pub mod options;
pub mod philox;
pub mod plan;
pub mod pool;
pub mod runtime;
pub mod sampler;
pub mod schedule;
#[cfg(test)]
mod test_models;
pub mod slab;
pub mod weights;

pub use error::RuntimeError;
pub use options::{Device, Options, Precision, Progress, Sampler};
pub use philox::philox_normal;
pub use plan::PlanReport;
pub use runtime::{Planned, Runtime};
pub use weights::{WeightSource, WeightStore};
