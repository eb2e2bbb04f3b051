//! The runtime's error type: every failure names what is wrong.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("device {0} is not available in this build (the CPU backend is the only one compiled in)")]
    DeviceUnavailable(String),
    #[error("precision {0} is not supported on the CPU backend (only f32)")]
    UnsupportedPrecision(String),
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
    #[error("could not start worker thread: {0}")]
    Thread(String),
}
