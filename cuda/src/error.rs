//! The CUDA layer's error type: every failure names the call or the value that is wrong.

use thiserror::Error;

/// How to get nvcc/driver libraries onto a machine, quoted by availability errors.
pub const DRIVER_HINT: &str =
    "the CUDA backend needs an NVIDIA GPU with its driver (libcuda.so.1) \
and the cuBLAS and cuDNN 9 shared libraries on the loader path (LD_LIBRARY_PATH); use the CPU \
backend otherwise";

#[derive(Debug, Error)]
pub enum CudaError {
    /// No usable GPU: a library is missing, the driver reports no device, or the ordinal is out
    /// of range. Checked before any cudarc call that would panic.
    #[error("CUDA device unavailable: {reason}; {hint}")]
    DeviceUnavailable { reason: String, hint: &'static str },
    /// The GPU exists but is older than the kernels' minimum architecture.
    #[error(
        "CUDA device {ordinal} ({name}) has compute capability {major}.{minor}; the embedded kernels need 8.0 or newer"
    )]
    UnsupportedDevice {
        ordinal: usize,
        name: String,
        major: i32,
        minor: i32,
    },
    #[cfg(feature = "device")]
    #[error("CUDA driver call `{call}` failed: {source}")]
    Driver {
        call: &'static str,
        #[source]
        source: cudarc::driver::DriverError,
    },
    #[cfg(feature = "device")]
    #[error("cuBLAS call `{call}` failed: {source}")]
    Cublas {
        call: &'static str,
        #[source]
        source: cudarc::cublas::result::CublasError,
    },
    #[cfg(feature = "device")]
    #[error("cuDNN call `{call}` failed: {source}")]
    Cudnn {
        call: &'static str,
        #[source]
        source: cudarc::cudnn::CudnnError,
    },
    /// A kernel the launchers need is not in the embedded fatbin (a build inconsistency).
    #[error("kernel `{0}` is not in the embedded fatbin")]
    MissingKernel(String),
    /// Launch arguments that no grid can satisfy (too many rows, unsupported head size, ...).
    #[error("invalid launch of `{kernel}`: {reason}")]
    InvalidLaunch {
        kernel: &'static str,
        reason: String,
    },
    /// Tensor shapes that do not fit together (convolution, GEMM).
    #[error("invalid shape: {0}")]
    Shape(String),
    /// An arena layout or region that is out of range, misaligned or overflows.
    #[error("arena: {0}")]
    Arena(String),
    /// Stream capture into a CUDA graph failed or produced no graph.
    #[error("CUDA graph capture: {0}")]
    Capture(String),
    /// The device plan needs more bytes (weights excluded) than `Options::max_memory` allows.
    #[error("the device plan needs {needed} bytes but max_memory is {limit} bytes")]
    MemoryLimit { needed: usize, limit: usize },
    /// Host-side planning failed in the caller (model build, schedule, options): its own error,
    /// kept whole so the caller can recover its type (`downcast`).
    #[error(transparent)]
    Plan(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl CudaError {
    #[cfg(feature = "device")]
    pub fn driver(
        call: &'static str,
    ) -> impl FnOnce(cudarc::driver::DriverError) -> CudaError {
        move |source| CudaError::Driver { call, source }
    }

    #[cfg(feature = "device")]
    pub fn cublas(
        call: &'static str,
    ) -> impl FnOnce(cudarc::cublas::result::CublasError) -> CudaError {
        move |source| CudaError::Cublas { call, source }
    }

    #[cfg(feature = "device")]
    pub fn cudnn(call: &'static str) -> impl FnOnce(cudarc::cudnn::CudnnError) -> CudaError {
        move |source| CudaError::Cudnn { call, source }
    }

    pub fn unavailable(reason: impl Into<String>) -> CudaError {
        CudaError::DeviceUnavailable {
            reason: reason.into(),
            hint: DRIVER_HINT,
        }
    }
}
