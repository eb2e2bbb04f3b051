//! ldm-runtime: loads a blob, plans every buffer up front, runs the sampler and the decoder.

pub mod conv;
pub mod error;
pub mod fastmath;
pub mod gemm;
pub mod options;
pub mod philox;
pub mod pool;
pub mod schedule;

pub use error::RuntimeError;
pub use options::{Device, Options, Precision, Progress, Sampler};
pub use philox::philox_normal;
