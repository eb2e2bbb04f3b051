//! The data module's error type: every failure names the file (or URL) and what is wrong with it.

use std::path::PathBuf;

/// Errors of NIfTI reading/writing, preprocessing, dataset discovery, phantoms and download.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: not a readable NIfTI-1 file: {reason}")]
    BadNifti { path: PathBuf, reason: String },
    #[error("{path}: NIfTI-2 files are not supported (convert to NIfTI-1, e.g. with nibabel or fslchfiletype)")]
    Nifti2 { path: PathBuf },
    #[error("{path}: unsupported NIfTI datatype {datatype} ({name}); supported: uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64")]
    UnsupportedDatatype { path: PathBuf, datatype: i16, name: String },
    #[error("{path}: {reason}")]
    BadShape { path: PathBuf, reason: String },
    #[error("{path}: channel {channel} requested but the volume has {channels} channel(s)")]
    BadChannel {
        path: PathBuf,
        channel: usize,
        channels: usize,
    },
    #[error("{path}: {count} voxel(s) are NaN or infinite (first at voxel {first:?})")]
    NonFinite {
        path: PathBuf,
        count: usize,
        first: [usize; 3],
    },
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
