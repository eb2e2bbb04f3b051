//! Source tensors and the exact conversion of stored elements (f32/f16/bf16/f64, either byte
//! order) to f32.

use crate::pickle::StorageDtype;

/// One tensor read from a checkpoint, as f32 in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// Element type in the source file (reported by `convert`).
    pub source_dtype: StorageDtype,
}

/// Decode `bytes` (a whole number of elements) to f32. f16, bf16 and f32 convert exactly;
/// f64 rounds to the nearest f32.
pub fn decode(bytes: &[u8], dtype: StorageDtype, big_endian: bool) -> Vec<f32> {
    let size = dtype.size_bytes();
    let mut out = Vec::with_capacity(bytes.len() / size);
    for chunk in bytes.chunks_exact(size) {
        let v = match dtype {
            StorageDtype::F32 => {
                let a = [chunk[0], chunk[1], chunk[2], chunk[3]];
                if big_endian {
                    f32::from_be_bytes(a)
                } else {
                    f32::from_le_bytes(a)
                }
            }
            StorageDtype::F16 => {
                let a = [chunk[0], chunk[1]];
                let bits = if big_endian {
                    u16::from_be_bytes(a)
                } else {
                    u16::from_le_bytes(a)
                };
                half::f16::from_bits(bits).to_f32()
            }
            StorageDtype::BF16 => {
                let a = [chunk[0], chunk[1]];
                let bits = if big_endian {
                    u16::from_be_bytes(a)
                } else {
                    u16::from_le_bytes(a)
                };
                half::bf16::from_bits(bits).to_f32()
            }
            StorageDtype::F64 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(chunk);
                (if big_endian {
                    f64::from_be_bytes(a)
                } else {
                    f64::from_le_bytes(a)
                }) as f32
            }
        };
        out.push(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_dtype_exactly() {
        let x = 1.5f32;
        assert_eq!(
            decode(&x.to_le_bytes(), StorageDtype::F32, false),
            vec![1.5]
        );
        assert_eq!(decode(&x.to_be_bytes(), StorageDtype::F32, true), vec![1.5]);
        let h = half::f16::from_f32(-0.375).to_bits().to_le_bytes();
        assert_eq!(decode(&h, StorageDtype::F16, false), vec![-0.375]);
        let b = half::bf16::from_f32(3.0).to_bits().to_be_bytes();
        assert_eq!(decode(&b, StorageDtype::BF16, true), vec![3.0]);
        assert_eq!(
            decode(&0.1f64.to_le_bytes(), StorageDtype::F64, false),
            vec![0.1f32]
        );
    }
}
