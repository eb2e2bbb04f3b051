//! Errors of the package: `Failure` (a kind and the message, built without the GIL) and its
//! conversion into the Python exception classes defined in `brats_ldm/__init__.py`
//! (`BratsLdmError` and its subclasses), plus the mapping of runtime errors onto those kinds.

use ldm_runtime::arguments::ArgumentError;
use ldm_runtime::RuntimeError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Which `brats_ldm` exception class a failure raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `BratsLdmError` itself: internal failures (thread start, size overflow, CUDA).
    Other,
    /// `ModelError`: the blob cannot be read, is invalid, or cannot do what was asked.
    Model,
    /// `InvalidArgument` (also a `ValueError`): a bad argument value.
    InvalidArgument,
    /// `DeviceError`: the device or precision is not available in this build or machine.
    Device,
    /// `MemoryLimitError`: the plan needs more than `max_memory`.
    MemoryLimit,
    /// `Cancelled`: the progress callback returned `False`.
    Cancelled,
    /// `OutputError` (also an `OSError`): a file could not be written.
    Output,
    /// `CheckpointError`: a checkpoint or architecture to convert cannot be read or does not fit.
    Checkpoint,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Other => "BratsLdmError",
            Kind::Model => "ModelError",
            Kind::InvalidArgument => "InvalidArgument",
            Kind::Device => "DeviceError",
            Kind::MemoryLimit => "MemoryLimitError",
            Kind::Cancelled => "Cancelled",
            Kind::Output => "OutputError",
            Kind::Checkpoint => "CheckpointError",
        }
    }
}

/// A failure on its way to Python: safe to build and carry without the GIL.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(Kind::InvalidArgument, message)
    }

    /// Prefixes the message with what was being done, as the CLI's error context does
    /// ("context: cause").
    pub fn context(self, what: impl std::fmt::Display) -> Failure {
        Failure {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
        }
    }
}

/// An argument refused by the rules shared with the CLI: a bad value, or a model that cannot do
/// what was asked.
impl From<ArgumentError> for Failure {
    fn from(e: ArgumentError) -> Failure {
        match e {
            ArgumentError::Invalid(m) => Failure::new(Kind::InvalidArgument, m),
            ArgumentError::Model(m) => Failure::new(Kind::Model, m),
        }
    }
}

/// The runtime's typed errors, by what the user can do about them.
pub fn from_runtime(e: &RuntimeError) -> Failure {
    let kind = match e {
        RuntimeError::DeviceUnavailable(_)
        | RuntimeError::UnsupportedPrecision(_)
        | RuntimeError::Unsupported { .. } => Kind::Device,
        RuntimeError::MissingNetwork(_)
        | RuntimeError::MissingTensor(_)
        | RuntimeError::TensorShape { .. }
        | RuntimeError::TensorRead(..)
        | RuntimeError::InvalidConfig(_) => Kind::Model,
        RuntimeError::InvalidOption(_) | RuntimeError::BufferSize { .. } => Kind::InvalidArgument,
        RuntimeError::MemoryLimit { .. } => Kind::MemoryLimit,
        _ => Kind::Other,
    };
    Failure::new(kind, e.to_string())
}

fn exception_class(py: Python<'_>, kind: Kind) -> PyResult<Bound<'_, PyType>> {
    Ok(py
        .import("brats_ldm")?
        .getattr(kind.class_name())?
        .cast_into::<PyType>()?)
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        Python::attach(|py| match exception_class(py, f.kind) {
            Ok(class) => PyErr::from_type(class, f.message),
            // Only when the Python half of the package is broken (e.g. _native imported alone).
            Err(e) => PyRuntimeError::new_err(format!(
                "{} (and brats_ldm's exception classes are unavailable: {e})",
                f.message
            )),
        })
    }
}

pub type Result<T> = std::result::Result<T, Failure>;
