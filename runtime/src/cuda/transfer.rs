//! Host-device copies of the CUDA runtime: fp32 values as little-endian bytes, values in the
//! run's precision (fp16/bf16 rounded to nearest even), and an fp32 region downloaded straight
//! into the caller's buffer.

use ldm_cuda::arena::{DeviceArena, Region};
use ldm_cuda::device::CudaDevice;
use ldm_cuda::error::CudaError;
use ldm_weights::DType;

/// Little-endian bytes of fp32 values.
pub(super) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Copies an fp32 region straight into `out` (no staging buffer, so decoding allocates nothing).
pub(super) fn download_f32(
    arena: &DeviceArena,
    dev: &CudaDevice,
    region: Region,
    out: &mut [f32],
) -> Result<(), CudaError> {
    // SAFETY: any byte pattern is a valid f32, and the byte view covers exactly `out`.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(out))
    };
    arena.download(dev.stream(), region, bytes)?;
    for v in out.iter_mut() {
        *v = f32::from_bits(u32::from_le(v.to_bits()));
    }
    Ok(())
}

/// Little-endian bytes of `v` in `dtype` (round to nearest even for the half types).
pub(super) fn typed_bytes(v: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => f32_bytes(v),
        DType::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        DType::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
    }
}
