//! Builders of structured inputs: zip archives with stored members (as `torch.save` writes
//! them), the checksums that seal blobs and training checkpoints (so mutations get past the
//! checksum to the decoders), and deterministic filler bytes.

use std::io::{Cursor, Write};

/// A zip archive of stored (uncompressed) members with a valid central directory.
pub fn zip_archive(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    for (name, bytes) in members {
        // Names the writer refuses (none expected) leave the member out.
        if z.start_file(name.as_str(), opts).is_ok() {
            let _ = z.write_all(bytes);
        }
    }
    z.finish().map(Cursor::into_inner).unwrap_or_default()
}

/// `bytes` with its last 8 bytes replaced by the XXH3-64 of everything before (a blob's seal).
pub fn seal_xxh3(bytes: &[u8]) -> Option<Vec<u8>> {
    let end = bytes.len().checked_sub(8)?;
    let mut out = bytes.to_vec();
    let sum = xxhash_rust::xxh3::xxh3_64(&out[..end]);
    out[end..].copy_from_slice(&sum.to_le_bytes());
    Some(out)
}

/// FNV-1a 64 of `bytes` (a training checkpoint's trailer).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// `bytes` with its last 8 bytes replaced by the FNV-1a of everything before.
pub fn seal_fnv(bytes: &[u8]) -> Option<Vec<u8>> {
    let end = bytes.len().checked_sub(8)?;
    let mut out = bytes.to_vec();
    let sum = fnv1a(&out[..end]);
    out[end..].copy_from_slice(&sum.to_le_bytes());
    Some(out)
}

/// A xorshift64 stream seeded from `seed` (never zero).
pub struct Filler(u64);

impl Filler {
    pub fn new(seed: u64) -> Filler {
        Filler(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` bytes of the stream.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
