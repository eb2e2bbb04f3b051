//! Which status code each runtime or blob error becomes; the message is the error's own text.

use super::status::*;
use crate::RuntimeError;
use ldm_weights::BlobError;

pub fn from_blob(e: &BlobError) -> CError {
    let code = match e {
        BlobError::Io { .. } => ERR_IO,
        _ => ERR_INVALID_BLOB,
    };
    CError::new(code, format!("cannot load blob: {e}"))
}

pub fn from_runtime(e: &RuntimeError) -> CError {
    let code = match e {
        RuntimeError::DeviceUnavailable(_)
        | RuntimeError::UnsupportedPrecision(_)
        | RuntimeError::Unsupported { .. } => ERR_UNSUPPORTED,
        // The blob's model does not fit what the runtime needs (its config or its tensors).
        RuntimeError::MissingNetwork(_)
        | RuntimeError::MissingTensor(_)
        | RuntimeError::TensorShape { .. }
        | RuntimeError::TensorRead(..)
        | RuntimeError::InvalidConfig(_) => ERR_INVALID_BLOB,
        RuntimeError::InvalidOption(_) => ERR_INVALID_ARGUMENT,
        RuntimeError::BufferSize { .. } => ERR_BUFFER_TOO_SMALL,
        RuntimeError::MemoryLimit { .. } | RuntimeError::Overflow(_) | RuntimeError::OutOfMemory { .. } => ERR_OUT_OF_MEMORY,
        // Not exhaustive on purpose: a variant added to the runtime maps to the generic code
        // instead of breaking the build of the whole crate.
        #[allow(unreachable_patterns)]
        _ => ERR_RUNTIME,
    };
    CError::new(code, e.to_string())
}
