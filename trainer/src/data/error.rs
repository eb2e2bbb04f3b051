//! The data module's error type: every failure names the file (or URL) and what is wrong with it.

use std::path::PathBuf;

/// Errors of NIfTI reading/writing, preprocessing, dataset discovery, phantoms and download.
/// Preprocessing's own refusals (`BadShape`, `TooLarge`, `BadAffine`) name the file as the
/// reader's do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A NIfTI file the reader refused (`ldm_io::nifti`: header, datatype, size, channels,
    /// non-finite voxels, affine), with the reader's message.
    #[error(transparent)]
    Nifti(#[from] ldm_io::nifti::NiftiError),
    #[error("{path}: {reason}")]
    BadShape { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    TooLarge { path: PathBuf, reason: String },
    #[error("{path}: the voxel-to-world affine is not usable: {reason}")]
    BadAffine { path: PathBuf, reason: String },
    #[error("{path}: bad dataset description: {reason}")]
    BadDataset { path: PathBuf, reason: String },
    #[error("{path}: dataset lists a missing file {missing}")]
    MissingFile { path: PathBuf, missing: PathBuf },
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    #[error("{url}: download failed: {reason}")]
    Download { url: String, reason: String },
    #[error(
        "{path}: md5 mismatch: expected {expected}, got {actual}; the file was moved aside to {moved_to} and not used"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
        moved_to: PathBuf,
    },
    #[error("{archive}: unsafe archive entry {entry:?}: {reason}; nothing was extracted")]
    UnsafeArchive {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
}

impl DataError {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            cause,
        }
    }
}

/// Result alias of the data module.
pub type Result<T> = std::result::Result<T, DataError>;
