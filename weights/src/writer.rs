//! Blob writer: validates config and tensors against the contract, lays tensors out in canonical
//! order at 256-byte boundaries, and streams prefix, header, data and checksum. `write_blob_file`
//! writes through `ldm_io::atomic` (temporary file in the target's directory, renamed into
//! place), so a failed write never leaves a partial blob behind.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3Default;

use crate::config::ModelConfig;
use crate::error::BlobError;
use crate::format::{
    align_up, encode_header, version_word, Header, TensorEntry, ALIGN, FORMAT_MAJOR, FORMAT_MINOR, MAGIC,
    MAX_HEADER_LEN, PREFIX_LEN,
};
use crate::names::expected_tensors;
use crate::tensor::{first_non_finite, TensorData};

/// Writes a blob of `config` and `tensors` to `w`.
///
/// `tensors` must be exactly the tensors `expected_tensors(config)` lists (any order, matching
/// shapes, `bytes.len() == product(shape) * dtype size`, all values finite); they are written in
/// canonical order, so the same inputs always give the same bytes.
pub fn write_blob<W: Write>(w: W, config: &ModelConfig, tensors: &[TensorData]) -> Result<(), BlobError> {
    let ordered = check_tensors(config, tensors)?;
    let (header_bytes, entries) = layout(config, &ordered)?;

    let mut out = HashingWriter {
        inner: w,
        hasher: Xxh3Default::new(),
        pos: 0,
    };
    out.put(&MAGIC)?;
    out.put(&version_word(FORMAT_MAJOR, FORMAT_MINOR).to_le_bytes())?;
    out.put(&(header_bytes.len() as u64).to_le_bytes())?;
    out.put(&header_bytes)?;
    for (entry, t) in entries.iter().zip(&ordered) {
        out.pad_to(entry.offset)?;
        out.put(&t.bytes)?;
    }
    let checksum = out.hasher.digest();
    out.inner.write_all(&checksum.to_le_bytes()).map_err(BlobError::Write)?;
    out.inner.flush().map_err(BlobError::Write)
}

/// Writes a blob to `path` atomically (`ldm_io::atomic`: a temporary file in the same directory,
/// synced, then renamed over `path`). On any error the temporary file is removed and `path` is
/// untouched.
pub fn write_blob_file(path: impl AsRef<Path>, config: &ModelConfig, tensors: &[TensorData]) -> Result<(), BlobError> {
    let path = path.as_ref();
    // The closure speaks io::Error; a blob error is kept aside and returned as itself.
    let mut blob_error = None;
    let result = ldm_io::atomic::write_file(path, |w| {
        write_blob(w, config, tensors).map_err(|e| {
            let marker = std::io::Error::other(e.to_string());
            blob_error = Some(e);
            marker
        })
    });
    match (result, blob_error) {
        (Ok(_), _) => Ok(()),
        (Err(_), Some(e)) => Err(e),
        (Err(cause), None) => Err(BlobError::Io {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

/// Checks `tensors` against the config's contract; returns them in canonical order.
fn check_tensors<'a>(config: &ModelConfig, tensors: &'a [TensorData]) -> Result<Vec<&'a TensorData>, BlobError> {
    config.validate()?;
    let mut by_name: HashMap<&str, &TensorData> = HashMap::with_capacity(tensors.len());
    for t in tensors {
        if by_name.insert(t.name.as_str(), t).is_some() {
            return Err(BlobError::DuplicateTensor { name: t.name.clone() });
        }
    }
    let expected = expected_tensors(config);
    let mut ordered = Vec::with_capacity(expected.len());
    for spec in &expected {
        let t = by_name
            .remove(spec.name.as_str())
            .ok_or_else(|| BlobError::MissingTensor {
                name: spec.name.clone(),
            })?;
        if t.shape != spec.shape {
            return Err(BlobError::ShapeMismatch {
                name: t.name.clone(),
                expected: spec.shape.clone(),
                found: t.shape.clone(),
            });
        }
        let need = (spec.numel() as u64).checked_mul(t.dtype.size_bytes() as u64);
        if need != Some(t.bytes.len() as u64) {
            return Err(BlobError::DataLength {
                name: t.name.clone(),
                expected: need.unwrap_or(u64::MAX),
                found: t.bytes.len() as u64,
            });
        }
        if let Some(index) = first_non_finite(t.dtype, &t.bytes) {
            return Err(BlobError::NonFinite {
                name: t.name.clone(),
                index: index as u64,
                dtype: t.dtype,
            });
        }
        ordered.push(t);
    }
    // Whatever is left was not expected; report the first in input order.
    if let Some(t) = tensors.iter().find(|t| by_name.contains_key(t.name.as_str())) {
        return Err(BlobError::UnexpectedTensor { name: t.name.clone() });
    }
    Ok(ordered)
}

/// Assigns offsets and encodes the header. The header's size depends on the offsets (varints)
/// and the offsets on the header's size, so iterate until the data start no longer moves; it
/// only grows and the header's growth is bounded, so this settles in a few rounds.
fn layout(config: &ModelConfig, ordered: &[&TensorData]) -> Result<(Vec<u8>, Vec<TensorEntry>), BlobError> {
    let overflow = || BlobError::LayoutOverflow("tensor offsets exceed u64");
    let mut data_start = align_up(PREFIX_LEN).ok_or_else(overflow)?;
    for _ in 0..32 {
        let mut entries = Vec::with_capacity(ordered.len());
        let mut next = data_start;
        for t in ordered {
            let len = t.bytes.len() as u64;
            entries.push(TensorEntry {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.iter().map(|&d| d as u64).collect(),
                offset: next,
                len,
            });
            next = next.checked_add(len).and_then(align_up).ok_or_else(overflow)?;
        }
        let header = Header {
            config: config.clone(),
            tensors: entries,
        };
        let bytes = encode_header(&header).map_err(|e| BlobError::HeaderEncode(e.to_string()))?;
        if bytes.len() as u64 > MAX_HEADER_LEN {
            return Err(BlobError::HeaderTooLarge {
                header_len: bytes.len() as u64,
                max: MAX_HEADER_LEN,
            });
        }
        let need = align_up(PREFIX_LEN + bytes.len() as u64).ok_or_else(overflow)?;
        if need <= data_start {
            return Ok((bytes, header.tensors));
        }
        data_start = need;
    }
    Err(BlobError::LayoutOverflow("header size did not settle"))
}

/// Counts and hashes everything written.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Xxh3Default,
    pos: u64,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.inner.write_all(bytes).map_err(BlobError::Write)?;
        self.hasher.update(bytes);
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Writes zero bytes up to absolute position `target` (at most `ALIGN - 1` of them).
    fn pad_to(&mut self, target: u64) -> Result<(), BlobError> {
        const ZEROS: [u8; ALIGN as usize] = [0; ALIGN as usize];
        while self.pos < target {
            let n = (target - self.pos).min(ALIGN) as usize;
            self.put(&ZEROS[..n])?;
        }
        Ok(())
    }
}
