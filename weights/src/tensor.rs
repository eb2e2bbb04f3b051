//! Tensor payloads: owned data for writing (`TensorData`), borrowed views for reading
//! (`TensorView`), element conversion to and from f32, and the non-finite scan.
//!
//! Stored elements are little-endian. f16/bf16 conversion uses `half`, which rounds to nearest,
//! ties to even.

use half::{bf16, f16};

use crate::error::BlobError;
use crate::DType;

/// A tensor to be written: name, element type, PyTorch shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl TensorData {
    /// Converts f32 values to `dtype` (f16/bf16 round to nearest even) and stores them.
    /// The writer checks that `values.len()` equals the product of `shape`.
    pub fn from_f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32], dtype: DType) -> TensorData {
        let mut bytes = Vec::with_capacity(values.len() * dtype.size_bytes());
        match dtype {
            DType::F32 => values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
            DType::F16 => values
                .iter()
                .for_each(|v| bytes.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
            DType::BF16 => values
                .iter()
                .for_each(|v| bytes.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        }
        TensorData {
            name: name.into(),
            dtype,
            shape,
            bytes,
        }
    }

    /// A borrowed view of this tensor's data.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            dtype: self.dtype,
            shape: &self.shape,
            bytes: &self.bytes,
        }
    }
}

/// A tensor inside a loaded blob (or a `TensorData`): element type, shape and raw bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements stored (bytes / element size).
    pub fn numel(&self) -> usize {
        self.bytes.len() / self.dtype.size_bytes()
    }

    /// All elements converted to f32 (exact for every stored dtype).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.numel()];
        convert_to_f32(self.dtype, self.bytes, &mut out);
        out
    }

    /// Converts all elements into `out`, which must hold exactly `numel()` values. No allocation.
    pub fn copy_to_f32(&self, out: &mut [f32]) -> Result<(), BlobError> {
        if out.len() != self.numel() {
            return Err(BlobError::ElementCount {
                expected: self.numel() as u64,
                found: out.len() as u64,
            });
        }
        convert_to_f32(self.dtype, self.bytes, out);
        Ok(())
    }
}

/// `out.len()` must equal `bytes.len() / dtype.size_bytes()` (callers check).
fn convert_to_f32(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
    }
}

/// Index of the first NaN or infinite element, if any (integer test on the exponent bits).
pub(crate) fn first_non_finite(dtype: DType, bytes: &[u8]) -> Option<usize> {
    match dtype {
        DType::F32 => first_match(bytes, 4, |c| {
            u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7f80_0000 == 0x7f80_0000
        }),
        DType::F16 => first_match(bytes, 2, |c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00),
        DType::BF16 => first_match(bytes, 2, |c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80),
    }
}

/// Scans in blocks with a branch-free test per block (vectorisable), then locates the element.
fn first_match(bytes: &[u8], size: usize, bad: impl Fn(&[u8]) -> bool + Copy) -> Option<usize> {
    const BLOCK: usize = 4096;
    let block_bytes = BLOCK * size;
    for (b, block) in bytes.chunks(block_bytes).enumerate() {
        let any = block.chunks_exact(size).fold(false, |acc, c| acc | bad(c));
        if any {
            let i = block.chunks_exact(size).position(bad).unwrap_or(0);
            return Some(b * BLOCK + i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_detection_per_dtype() {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let mut v = vec![0.5f32; 10_000];
            v[1] = f32::MAX / 2.0; // finite in f32, overflows to inf in f16 only
            let t = TensorData::from_f32("t", vec![v.len()], &v, dtype);
            let expect = if dtype == DType::F16 { Some(1) } else { None };
            assert_eq!(first_non_finite(dtype, &t.bytes), expect, "{dtype:?}");
            for (i, bad) in [(9_999usize, f32::NAN), (4_100, f32::NEG_INFINITY)] {
                let mut w = vec![0.25f32; 10_000];
                w[i] = bad;
                let t = TensorData::from_f32("t", vec![w.len()], &w, dtype);
                assert_eq!(first_non_finite(dtype, &t.bytes), Some(i), "{dtype:?} {i}");
            }
        }
    }

    #[test]
    fn conversions_match_half() {
        let v = [1.0f32, -2.5, 1e-8, 65504.0, 3.140625, 0.1];
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let t = TensorData::from_f32("t", vec![v.len()], &v, dtype);
            let back = t.view().to_f32_vec();
            let want: Vec<f32> = match dtype {
                DType::F32 => v.to_vec(),
                DType::F16 => v.iter().map(|x| f16::from_f32(*x).to_f32()).collect(),
                DType::BF16 => v.iter().map(|x| bf16::from_f32(*x).to_f32()).collect(),
            };
            assert_eq!(back, want);
            let mut out = [0.0f32; 6];
            t.view().copy_to_f32(&mut out).unwrap();
            assert_eq!(out.to_vec(), want);
            assert!(matches!(
                t.view().copy_to_f32(&mut [0.0; 5]),
                Err(BlobError::ElementCount { expected: 6, found: 5 })
            ));
        }
    }
}
