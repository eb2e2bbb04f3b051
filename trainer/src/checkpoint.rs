//! Training checkpoints: every flat buffer of a trainer (parameters, Adam moments) plus a JSON
//! header (kind, step, optimiser step counts, configs, tensor table, free-form loop state),
//! written atomically (temp file in the same directory, fsync, rename) so a killed run leaves
//! either the old or the new checkpoint, never a torn one.
//!
//! Layout (little-endian): `b"LDMCKPT1"`, u64 header length, header JSON, then each section's
//! f32 values in header order, then a u64 FNV-1a checksum of everything before it. The reader
//! checks magic, sizes against the file length (no allocation from an unchecked length),
//! section lengths, and the checksum before returning anything.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

const MAGIC: &[u8; 8] = b"LDMCKPT1";
/// Headers are small JSON documents; anything larger is corruption.
const MAX_HEADER: u64 = 64 << 20;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{path}: not a brats-ldm checkpoint (bad magic)")]
    Magic { path: PathBuf },
    #[error("{path}: corrupt checkpoint: {msg}")]
    Corrupt { path: PathBuf, msg: String },
    #[error("{path}: checksum mismatch (file damaged or truncated)")]
    Checksum { path: PathBuf },
    #[error("checkpoint does not fit this trainer: {0}")]
    Mismatch(String),
}

/// One named flat buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionInfo {
    pub name: String,
    pub len: u64,
}

/// The JSON header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    /// "vae_gan" or "diffusion".
    pub kind: String,
    /// Completed training steps.
    pub step: u64,
    pub seed: u64,
    /// Trainer configuration and model configs (JSON).
    pub config: serde_json::Value,
    /// Names and shapes of the parameters, per model, in flat-buffer order.
    pub tensors: serde_json::Value,
    /// Adam step counters, per optimiser.
    pub adam_steps: Vec<u64>,
    /// Free-form state of the training loop (data cursor, epoch, ...).
    pub extra: serde_json::Value,
    pub sections: Vec<SectionInfo>,
}

fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

struct HashingWriter<W: Write> {
    inner: W,
    hash: u64,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        fnv1a(&mut self.hash, bytes);
        self.inner.write_all(bytes)
    }
}

/// Writes `header` and the sections (same order and lengths as `header.sections`) atomically.
pub fn save(path: &Path, header: &CheckpointHeader, sections: &[&[f32]]) -> Result<(), CheckpointError> {
    let io = |cause| CheckpointError::Io { path: path.to_path_buf(), cause };
    if sections.len() != header.sections.len()
        || sections.iter().zip(&header.sections).any(|(s, i)| s.len() as u64 != i.len)
    {
        return Err(CheckpointError::Mismatch("section table does not describe the buffers".into()));
    }
    let json = serde_json::to_vec(header).map_err(|e| CheckpointError::Mismatch(e.to_string()))?;
    ldm_io::atomic::write_file(path, |out| {
        // Streamed through the writer's buffer (no second copy of the state), hashed as written.
        let mut w = HashingWriter { inner: out, hash: FNV_OFFSET };
        w.put(MAGIC)?;
        w.put(&(json.len() as u64).to_le_bytes())?;
        w.put(&json)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for s in sections {
            for chunk in s.chunks(1 << 14) {
                buf.clear();
                chunk.iter().for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
                w.put(&buf)?;
            }
        }
        let hash = w.hash;
        w.inner.write_all(&hash.to_le_bytes())
    })
    .map(|_| ())
    .map_err(io)
}

/// Reads and validates a checkpoint; returns the header and the sections.
pub fn load(path: &Path) -> Result<(CheckpointHeader, Vec<Vec<f32>>), CheckpointError> {
    let bytes = ldm_io::input::read_all(path, ldm_io::Budget::default()).map_err(|cause| CheckpointError::Io { path: path.to_path_buf(), cause })?;
    let corrupt = |msg: String| CheckpointError::Corrupt { path: path.to_path_buf(), msg };
    if bytes.len() < 24 || &bytes[..8] != MAGIC {
        return Err(CheckpointError::Magic { path: path.to_path_buf() });
    }
    let body_len = bytes.len() - 8;
    let mut h = FNV_OFFSET;
    fnv1a(&mut h, &bytes[..body_len]);
    let stored = u64::from_le_bytes(bytes[body_len..].try_into().map_err(|_| corrupt("short trailer".into()))?);
    if h != stored {
        return Err(CheckpointError::Checksum { path: path.to_path_buf() });
    }
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| corrupt("short header length".into()))?);
    if hlen > MAX_HEADER || 16 + hlen > body_len as u64 {
        return Err(corrupt(format!("header length {hlen} exceeds the file")));
    }
    let hend = 16 + hlen as usize;
    let header: CheckpointHeader =
        serde_json::from_slice(&bytes[16..hend]).map_err(|e| corrupt(format!("header: {e}")))?;
    let mut total: u64 = 0;
    for s in &header.sections {
        total = s.len.checked_mul(4).and_then(|b| total.checked_add(b)).ok_or_else(|| corrupt("section sizes overflow".into()))?;
    }
    if total != (body_len - hend) as u64 {
        return Err(corrupt(format!("sections need {total} bytes, file holds {}", body_len - hend)));
    }
    let mut off = hend;
    let mut out = Vec::with_capacity(header.sections.len());
    for s in &header.sections {
        let n = s.len as usize;
        out.push(bytes[off..off + 4 * n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
        off += 4 * n;
    }
    Ok((header, out))
}
