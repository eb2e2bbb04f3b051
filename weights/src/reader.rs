//! Validating blob reader: `Blob` owns the whole file in one buffer and hands out borrowed tensor
//! views. Nothing in the file is trusted until every check in FORMAT.md ("Validation") passed:
//! prefix, sizes, checksum, header decode, config, table layout, tensor contract, finiteness.

use std::collections::HashMap;
use std::path::Path;

use ldm_io::input::{read_full, read_rest, Input};
use ldm_io::Budget;
use xxhash_rust::xxh3::xxh3_64;

use crate::config::ModelConfig;
use crate::error::BlobError;
use crate::format::{
    align_up, decode_header_of_major, TensorEntry, ALIGN, CHECKSUM_LEN, FORMAT_MAJOR, FORMAT_MINOR, MAGIC, MAX_HEADER_LEN,
    OLDEST_READABLE_MAJOR,
    PREFIX_LEN,
};
use crate::names::expected_tensors;
use crate::tensor::{first_non_finite, TensorView};
use crate::DType;

/// One row of a loaded blob's tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte offset in the file (a multiple of 256).
    pub offset: u64,
    /// Byte length.
    pub len: u64,
}

/// A loaded and fully validated blob.
#[derive(Debug)]
pub struct Blob {
    bytes: Vec<u8>,
    config: ModelConfig,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    checksum: u64,
    version: (u16, u16),
    header_len: u64,
}

impl Blob {
    /// Reads the file into one buffer within the default budget (half of physical memory), then
    /// validates it (`from_bytes`).
    pub fn open(path: impl AsRef<Path>) -> Result<Blob, BlobError> {
        Blob::open_within(path, Budget::default())
    }

    /// `open` with an explicit byte limit. A regular file's length is checked against `budget`
    /// before it is read; a FIFO or socket is refused without opening it (it could block); a
    /// device must start with the blob magic and is read only up to the budget.
    pub fn open_within(path: impl AsRef<Path>, budget: Budget) -> Result<Blob, BlobError> {
        let path = path.as_ref();
        let io = |cause| BlobError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let mut input = Input::open(path).map_err(io)?;
        let mut head = vec![0u8; MAGIC.len()];
        let got = read_full(&mut input.file, &mut head).map_err(io)?;
        head.truncate(got);
        if got == MAGIC.len() && head[..] != MAGIC[..] {
            return Err(BlobError::BadMagic {
                found: le_array(&head, 0),
            });
        }
        let bytes = read_rest(&mut input, head, budget, "the model file").map_err(io)?;
        Blob::from_bytes(bytes)
    }

    /// Validates `bytes` as a blob and takes ownership of them (no copy).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Blob, BlobError> {
        let file_len = bytes.len() as u64;
        let min = PREFIX_LEN + CHECKSUM_LEN;
        if file_len < min {
            return Err(BlobError::TooShort { len: file_len, min });
        }
        let found: [u8; 8] = le_array(&bytes, 0);
        if found != MAGIC {
            return Err(BlobError::BadMagic { found });
        }
        let word = u32::from_le_bytes(le_array(&bytes, 8));
        let (major, minor) = ((word >> 16) as u16, (word & 0xffff) as u16);
        if !(OLDEST_READABLE_MAJOR..=FORMAT_MAJOR).contains(&major) {
            return Err(BlobError::UnsupportedVersion {
                major,
                minor,
                oldest: OLDEST_READABLE_MAJOR,
                supported: FORMAT_MAJOR,
            });
        }
        let header_len = u64::from_le_bytes(le_array(&bytes, 12));
        let data_end = file_len - CHECKSUM_LEN;
        let header_end = PREFIX_LEN.checked_add(header_len).filter(|&e| e <= data_end);
        let Some(header_end) = header_end else {
            return Err(BlobError::HeaderOutOfBounds { header_len, file_len });
        };
        if header_len > MAX_HEADER_LEN {
            return Err(BlobError::HeaderTooLarge {
                header_len,
                max: MAX_HEADER_LEN,
            });
        }

        let stored = u64::from_le_bytes(le_array(&bytes, data_end as usize));
        let computed = xxh3_64(&bytes[..data_end as usize]);
        if stored != computed {
            return Err(BlobError::ChecksumMismatch { stored, computed });
        }

        let header_bytes = &bytes[PREFIX_LEN as usize..header_end as usize];
        let (header, used) = decode_header_of_major(header_bytes, major).map_err(|e| BlobError::HeaderDecode(e.to_string()))?;
        // Trailing header bytes are extensions of a newer minor version; from this minor or an
        // older one they are corruption.
        #[allow(clippy::absurd_extreme_comparisons)]
        let known_minor = minor <= FORMAT_MINOR;
        if used as u64 != header_len && known_minor {
            return Err(BlobError::HeaderTrailingBytes {
                used: used as u64,
                header_len,
            });
        }
        header.config.validate()?;
        // Cannot overflow: header_end <= file_len.
        let data_start = align_up(header_end).unwrap_or(u64::MAX);
        let tensors = check_table(&header.tensors, data_start, data_end)?;
        check_contract(&header.config, &tensors)?;
        for t in &tensors {
            let data = &bytes[t.offset as usize..(t.offset + t.len) as usize];
            if let Some(index) = first_non_finite(t.dtype, data) {
                return Err(BlobError::NonFinite {
                    name: t.name.clone(),
                    index: index as u64,
                    dtype: t.dtype,
                });
            }
        }
        let index = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(Blob {
            bytes,
            config: header.config,
            tensors,
            index,
            checksum: stored,
            version: (major, minor),
            header_len,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The tensor table in stored order.
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = &TensorInfo> + '_ {
        self.tensors.iter()
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// A view of one tensor's data, or `None` if the blob has no tensor of that name.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let t = self.tensor_info(name)?;
        // Offsets and lengths were checked against the buffer in `from_bytes`.
        let bytes = &self.bytes[t.offset as usize..(t.offset + t.len) as usize];
        Some(TensorView {
            dtype: t.dtype,
            shape: &t.shape,
            bytes,
        })
    }

    /// The stored (and verified) XXH3-64 checksum of the file.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// (major, minor) format version of the file.
    pub fn format_version(&self) -> (u16, u16) {
        self.version
    }

    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Total file size in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Sum of all tensors' data bytes.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.len).sum()
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// `N` bytes at `at`; callers have checked the length.
fn le_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&bytes[at..at + N]);
    a
}

/// Per-entry layout checks (sizes, alignment, range), duplicates, then overlaps.
fn check_table(entries: &[TensorEntry], data_start: u64, data_end: u64) -> Result<Vec<TensorInfo>, BlobError> {
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if seen.insert(e.name.as_str(), ()).is_some() {
            return Err(BlobError::DuplicateTensor { name: e.name.clone() });
        }
        let overflow = || BlobError::SizeOverflow {
            name: e.name.clone(),
            shape: e.shape.clone(),
        };
        let need = e
            .shape
            .iter()
            .try_fold(e.dtype.size_bytes() as u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(overflow)?;
        if need != e.len {
            return Err(BlobError::DataLength {
                name: e.name.clone(),
                expected: need,
                found: e.len,
            });
        }
        if e.offset % ALIGN != 0 {
            return Err(BlobError::Misaligned {
                name: e.name.clone(),
                offset: e.offset,
                align: ALIGN,
            });
        }
        let in_range = e.offset >= data_start && e.offset.checked_add(e.len).is_some_and(|end| end <= data_end);
        if !in_range {
            return Err(BlobError::OffsetOutOfRange {
                name: e.name.clone(),
                offset: e.offset,
                len: e.len,
                data_start,
                data_end,
            });
        }
        // In range of an in-memory buffer, so every dimension fits in usize.
        let shape = e
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| overflow()))
            .collect::<Result<_, _>>()?;
        out.push(TensorInfo {
            name: e.name.clone(),
            dtype: e.dtype,
            shape,
            offset: e.offset,
            len: e.len,
        });
    }
    let mut by_offset: Vec<&TensorInfo> = out.iter().collect();
    by_offset.sort_by_key(|t| (t.offset, t.len));
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Zero-length tensors occupy nothing and overlap nothing.
        if a.len > 0 && b.len > 0 && a.offset + a.len > b.offset {
            return Err(BlobError::Overlap {
                first: a.name.clone(),
                second: b.name.clone(),
            });
        }
    }
    Ok(out)
}

/// The table must hold exactly the tensors the config requires, with the required shapes.
fn check_contract(config: &ModelConfig, tensors: &[TensorInfo]) -> Result<(), BlobError> {
    let expected = expected_tensors(config);
    let by_name: HashMap<&str, &[usize]> = expected.iter().map(|s| (s.name.as_str(), s.shape.as_slice())).collect();
    for t in tensors {
        match by_name.get(t.name.as_str()) {
            None => return Err(BlobError::UnexpectedTensor { name: t.name.clone() }),
            Some(&shape) if shape != t.shape.as_slice() => {
                return Err(BlobError::ShapeMismatch {
                    name: t.name.clone(),
                    expected: shape.to_vec(),
                    found: t.shape.clone(),
                })
            }
            Some(_) => {}
        }
    }
    if tensors.len() != expected.len() {
        let present: HashMap<&str, ()> = tensors.iter().map(|t| (t.name.as_str(), ())).collect();
        if let Some(missing) = expected.iter().find(|s| !present.contains_key(s.name.as_str())) {
            return Err(BlobError::MissingTensor {
                name: missing.name.clone(),
            });
        }
    }
    Ok(())
}
