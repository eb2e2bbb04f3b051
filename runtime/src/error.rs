//! The runtime's error type: every failure names what is wrong.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The device cannot be used: the text names the device and why (a build without the
    /// `cuda` feature, no driver, no GPU, missing cuBLAS/cuDNN, too old a GPU).
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),
    #[error("precision {0} is not supported on the CPU backend (only f32; f16/bf16 need a CUDA device)")]
    UnsupportedPrecision(String),
    /// The backend the runtime was built for lacks this operation.
    #[error("{operation} is not available on the {backend} backend")]
    Unsupported { operation: &'static str, backend: &'static str },
    #[error("the blob has no {0} network, which this operation needs")]
    MissingNetwork(&'static str),
    #[error("missing tensor `{0}` in the weights")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape { name: String, got: Vec<usize>, expected: Vec<usize> },
    #[error("tensor `{0}` could not be read as f32: {1}")]
    TensorRead(String, String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("buffer `{what}` has {got} elements, expected {expected}")]
    BufferSize { what: &'static str, got: usize, expected: usize },
    #[error("the plan needs {needed} bytes but max_memory is {limit} bytes")]
    MemoryLimit { needed: usize, limit: usize },
    #[error("size overflow while planning {0}")]
    Overflow(&'static str),
    /// The plan fitted `max_memory` (or had none) but the system refused the allocation.
    #[error("cannot allocate the {what}: {bytes} bytes ({:.2} GiB) are not available", *bytes as f64 / (1u64 << 30) as f64)]
    OutOfMemory { what: &'static str, bytes: usize },
    #[error("could not start worker thread: {0}")]
    Thread(String),
    /// A failure inside the CUDA backend (driver, cuBLAS, cuDNN, launch, capture).
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Cuda(crate::cuda::CudaError),
}
