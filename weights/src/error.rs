//! `BlobError`: every way writing or reading a blob can fail, one variant per check.

use std::path::PathBuf;

use thiserror::Error;

use crate::validate::ConfigError;
use crate::DType;

#[derive(Debug, Error)]
pub enum BlobError {
    /// The cause is part of the message (not a `source()`), so `{:#}` chains print it once.
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("file is {len} bytes, shorter than the {min}-byte minimum (prefix + checksum): truncated or not a blob")]
    TooShort { len: u64, min: u64 },
    #[error("bad magic {found:02x?}: not a brats-ldm weight blob")]
    BadMagic { found: [u8; 8] },
    #[error("unsupported blob format version {major}.{minor}: this reader reads major versions {oldest} to {supported}{}", if *major > *supported { " (the blob was written by a newer brats-ldm; upgrade to read it)" } else { "" })]
    UnsupportedVersion { major: u16, minor: u16, oldest: u16, supported: u16 },
    #[error("header length {header_len} does not fit in the file ({file_len} bytes): truncated or corrupt")]
    HeaderOutOfBounds { header_len: u64, file_len: u64 },
    #[error("header length {header_len} exceeds the limit of {max} bytes")]
    HeaderTooLarge { header_len: u64, max: u64 },
    #[error("checksum mismatch: stored {stored:016x}, computed {computed:016x} (the file is corrupt)")]
    ChecksumMismatch { stored: u64, computed: u64 },
    #[error("header does not decode: {0}")]
    HeaderDecode(String),
    #[error("header decodes in {used} of its {header_len} bytes; trailing bytes are only allowed from a newer minor version")]
    HeaderTrailingBytes { used: u64, header_len: u64 },
    #[error("invalid model config: {0}")]
    InvalidConfig(#[from] ConfigError),
    #[error("tensor {name}: size of shape {shape:?} overflows")]
    SizeOverflow { name: String, shape: Vec<u64> },
    #[error("tensor {name}: stores {found} bytes but its shape and dtype need {expected}")]
    DataLength { name: String, expected: u64, found: u64 },
    #[error("tensor {name}: offset {offset} is not a multiple of {align}")]
    Misaligned { name: String, offset: u64, align: u64 },
    #[error("tensor {name}: bytes [{offset}, {offset}+{len}) lie outside the data region [{data_start}, {data_end})")]
    OffsetOutOfRange {
        name: String,
        offset: u64,
        len: u64,
        data_start: u64,
        data_end: u64,
    },
    #[error("tensors {first} and {second} overlap")]
    Overlap { first: String, second: String },
    #[error("tensor {name} appears more than once")]
    DuplicateTensor { name: String },
    #[error("tensor {name} is not part of the model described by the config")]
    UnexpectedTensor { name: String },
    #[error("tensor {name} is required by the config but missing")]
    MissingTensor { name: String },
    #[error("tensor {name}: shape {found:?} does not match the config's {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// In the stored dtype: an f32 value beyond +-65504 becomes infinite in f16 (bf16 keeps f32's range).
    #[error("tensor {name}: element {index} is NaN or infinite as {dtype:?}")]
    NonFinite { name: String, index: u64, dtype: DType },
    #[error("expected {expected} elements, got {found}")]
    ElementCount { expected: u64, found: u64 },
    #[error("blob layout overflows: {0}")]
    LayoutOverflow(&'static str),
    #[error("header does not encode: {0}")]
    HeaderEncode(String),
}
