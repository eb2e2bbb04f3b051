//! ldm-io: the file I/O of brats-ldm, shared by the CLI, the trainer and the blob crate.
//! - `atomic`: crash-safe file creation (temp file in the same directory, fsync, rename);
//! - `budget`: the byte limit an input may make us allocate, and `--max-memory` sizes;
//! - `escape`: strings from files made terminal-safe before they are printed;
//! - `input`: opening inputs (regular files and devices only, FIFOs refused without blocking)
//!   and reads capped by the budget;
//! - `npy`: the `.npy` float32 reader and writer;
//! - `gzip` (feature `gzip`): deterministic encoder, streaming CRC verification;
//! - `nifti` (feature `nifti`): the NIfTI-1 reader and the one NIfTI-1 writer;
//! - `affine`: the 4x4 affine type and the operations NIfTI I/O needs.
//!
//! The rule every reader follows: sizes taken from a file are checked against the file's real
//! length and against a `Budget` before anything sized by them is allocated.

pub mod affine;
pub mod atomic;
pub mod budget;
pub mod escape;
#[cfg(feature = "gzip")]
pub mod gzip;
pub mod input;
#[cfg(feature = "nifti")]
pub mod nifti;
pub mod npy;

pub use budget::{Budget, BudgetError};
