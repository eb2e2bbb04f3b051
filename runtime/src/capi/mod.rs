//! The C ABI: `extern "C"` functions over [`Runtime`](crate::Runtime), declared in
//! `runtime/include/brats_ldm.h` (the header is the user documentation: status codes, options,
//! thread safety, the last-error rule, handle-misuse detection and its limits).
//!
//! Build products: `libldm_runtime.so` (cdylib) and `libldm_runtime.a` (staticlib) from the
//! runtime crate. Design: every entry point catches panics (`exports::entry`); generators live
//! behind a registry of live handles with a busy flag (`handle`); the options struct carries its
//! size for forward compatibility (`options`); the last error is per thread (`last_error`).
//! Cancellation from the progress callback unwinds out of `Runtime::generate` with a private
//! payload, which is caught before the boundary (the callback is never called from inside the
//! runtime's worker pool, so no worker is left holding borrowed state).

pub mod exports;
pub mod handle;
pub mod last_error;
pub mod map_error;
pub mod options;
pub mod status;
pub mod types;

pub use exports::*;
pub use types::{BratsLdmGenerator, BratsLdmOptions, BratsLdmOutputInfo, BratsLdmPlan, BratsLdmProgress};
