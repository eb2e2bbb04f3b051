//! The device arena: one allocation made at load time, carved into regions by byte offsets from
//! a plan. `ArenaLayout` is the host-side math (alignment, bounds, overflow), unit-tested without
//! a GPU; `DeviceArena` owns the allocation and turns regions into raw device addresses for the
//! kernels, cuBLAS and cuDNN. Nothing is allocated after construction.

#[cfg(feature = "device")]
use std::sync::Arc;

#[cfg(feature = "device")]
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use super::error::CudaError;

/// Alignment of every region: cuDNN/cuBLAS want 128+ bytes for vectorised paths, and the blob
/// stores tensors at 256-byte boundaries, so weights can be uploaded as they are stored.
pub const ARENA_ALIGN: usize = 256;

/// `x` rounded up to a multiple of `align` (a power of two), or None on overflow.
pub fn align_up(x: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// A byte range of the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: usize,
    pub bytes: usize,
}

impl Region {
    pub fn end(&self) -> usize {
        self.offset + self.bytes
    }

    /// Elements of `elem_bytes` each, rejecting regions that are not a whole number of them.
    pub fn elements(&self, elem_bytes: usize) -> Result<usize, CudaError> {
        if elem_bytes == 0 || self.bytes % elem_bytes != 0 {
            return Err(CudaError::Arena(format!(
                "region at {} of {} bytes is not a whole number of {elem_bytes}-byte elements",
                self.offset, self.bytes
            )));
        }
        Ok(self.bytes / elem_bytes)
    }
}

/// Regions and total size of an arena. Build it by bump allocation (`push`) or from a plan's
/// offsets (`from_plan`, which allows overlapping regions: liveness-based reuse).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArenaLayout {
    regions: Vec<Region>,
    total: usize,
}

impl ArenaLayout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a region of `bytes` at the next aligned offset.
    pub fn push(&mut self, bytes: usize) -> Result<Region, CudaError> {
        let offset = align_up(self.total, ARENA_ALIGN).ok_or_else(|| {
            CudaError::Arena(format!("offset overflows after {} bytes", self.total))
        })?;
        let end = offset.checked_add(bytes).ok_or_else(|| {
            CudaError::Arena(format!("region of {bytes} bytes at {offset} overflows"))
        })?;
        let region = Region { offset, bytes };
        self.regions.push(region);
        self.total = end;
        Ok(region)
    }

    /// Validates a plan's regions against its total: every offset aligned, every region inside.
    pub fn from_plan(regions: &[Region], total: usize) -> Result<Self, CudaError> {
        for (i, r) in regions.iter().enumerate() {
            if r.offset % ARENA_ALIGN != 0 {
                return Err(CudaError::Arena(format!(
                    "plan region {i} at offset {} is not {ARENA_ALIGN}-byte aligned",
                    r.offset
                )));
            }
            let end = r.offset.checked_add(r.bytes).ok_or_else(|| {
                CudaError::Arena(format!(
                    "plan region {i} ({} bytes at {}) overflows",
                    r.bytes, r.offset
                ))
            })?;
            if end > total {
                return Err(CudaError::Arena(format!(
                    "plan region {i} ends at byte {end}, beyond the arena's {total} bytes"
                )));
            }
        }
        Ok(ArenaLayout {
            regions: regions.to_vec(),
            total,
        })
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Bytes to allocate: the end of the last region, rounded up to the alignment (at least one
    /// alignment unit, so even an empty plan gets a valid base address).
    pub fn total_bytes(&self) -> Result<usize, CudaError> {
        align_up(self.total.max(1), ARENA_ALIGN)
            .ok_or_else(|| CudaError::Arena(format!("total {} overflows when aligned", self.total)))
    }
}

/// A raw device address (CUdeviceptr). Null means "absent" for optional kernel arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevPtr(pub u64);

impl DevPtr {
    pub const NULL: DevPtr = DevPtr(0);

    pub fn is_null(self) -> bool {
        self.0 == 0
    }

    /// The address `bytes` further on.
    pub fn offset_by(self, bytes: usize) -> DevPtr {
        DevPtr(self.0 + bytes as u64)
    }
}

#[cfg(feature = "device")]
/// One device allocation holding every region of a layout.
pub struct DeviceArena {
    buffer: CudaSlice<u8>,
    base: u64,
    bytes: usize,
}

#[cfg(feature = "device")]
impl DeviceArena {
    /// Allocates `layout.total_bytes()` (zeroed) on `stream`'s device.
    pub fn new(stream: &Arc<CudaStream>, layout: &ArenaLayout) -> Result<Self, CudaError> {
        let bytes = layout.total_bytes()?;
        let buffer = stream
            .alloc_zeros::<u8>(bytes)
            .map_err(CudaError::driver("cuMemAlloc (arena)"))?;
        let base = {
            let (ptr, _sync) = buffer.device_ptr(stream);
            ptr
        };
        if base % ARENA_ALIGN as u64 != 0 {
            return Err(CudaError::Arena(format!(
                "driver returned a base address {base:#x} not {ARENA_ALIGN}-byte aligned"
            )));
        }
        Ok(DeviceArena {
            buffer,
            base,
            bytes,
        })
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Device address of a region, checked against the allocation.
    pub fn ptr(&self, region: Region) -> Result<DevPtr, CudaError> {
        match region.offset.checked_add(region.bytes) {
            Some(end) if end <= self.bytes => Ok(DevPtr(self.base + region.offset as u64)),
            _ => Err(CudaError::Arena(format!(
                "region of {} bytes at {} is outside the {}-byte arena",
                region.bytes, region.offset, self.bytes
            ))),
        }
    }

    /// Copies `data` into `region` (which must be exactly as large) and waits for the copy.
    pub fn upload(
        &mut self,
        stream: &Arc<CudaStream>,
        region: Region,
        data: &[u8],
    ) -> Result<(), CudaError> {
        if data.len() != region.bytes {
            return Err(CudaError::Arena(format!(
                "upload of {} bytes into a region of {} bytes",
                data.len(),
                region.bytes
            )));
        }
        self.ptr(region)?;
        let mut view = self.buffer.slice_mut(region.offset..region.end());
        stream
            .memcpy_htod(data, &mut view)
            .map_err(CudaError::driver("cuMemcpyHtoD (arena upload)"))?;
        stream
            .synchronize()
            .map_err(CudaError::driver("cuStreamSynchronize"))
    }

    /// Copies `region` back into `out` (which must be exactly as large), waiting for the copy.
    pub fn download(
        &self,
        stream: &Arc<CudaStream>,
        region: Region,
        out: &mut [u8],
    ) -> Result<(), CudaError> {
        if out.len() != region.bytes {
            return Err(CudaError::Arena(format!(
                "download of a {}-byte region into {} bytes",
                region.bytes,
                out.len()
            )));
        }
        self.ptr(region)?;
        let view = self.buffer.slice(region.offset..region.end());
        stream
            .memcpy_dtoh(&view, out)
            .map_err(CudaError::driver("cuMemcpyDtoH (arena download)"))?;
        stream
            .synchronize()
            .map_err(CudaError::driver("cuStreamSynchronize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_to_multiples() {
        assert_eq!(align_up(0, 256), Some(0));
        assert_eq!(align_up(1, 256), Some(256));
        assert_eq!(align_up(256, 256), Some(256));
        assert_eq!(align_up(257, 256), Some(512));
        assert_eq!(align_up(usize::MAX - 10, 256), None);
    }

    #[test]
    fn push_aligns_every_region_and_never_overlaps() {
        let mut l = ArenaLayout::new();
        let sizes = [1usize, 255, 256, 257, 4 * 354_816, 3, 0, 12];
        let regions: Vec<Region> = sizes.iter().map(|&b| l.push(b).unwrap()).collect();
        for (r, &b) in regions.iter().zip(&sizes) {
            assert_eq!(r.offset % ARENA_ALIGN, 0);
            assert_eq!(r.bytes, b);
        }
        for w in regions.windows(2) {
            assert!(w[0].end() <= w[1].offset, "{w:?}");
        }
        assert_eq!(regions[1].offset, 256);
        assert_eq!(regions[3].offset, 768);
        let total = l.total_bytes().unwrap();
        assert_eq!(total % ARENA_ALIGN, 0);
        assert!(total >= regions.last().unwrap().end());
        assert_eq!(ArenaLayout::new().total_bytes().unwrap(), ARENA_ALIGN);
    }

    #[test]
    fn push_reports_overflow() {
        let mut l = ArenaLayout::new();
        l.push(usize::MAX - 100).unwrap();
        assert!(matches!(l.push(1), Err(CudaError::Arena(_))));
    }

    #[test]
    fn from_plan_checks_alignment_and_bounds_but_allows_reuse() {
        let reuse = [
            Region {
                offset: 0,
                bytes: 1024,
            },
            Region {
                offset: 512,
                bytes: 512,
            },
        ];
        let l = ArenaLayout::from_plan(&reuse, 1024).unwrap();
        assert_eq!(l.regions().len(), 2);
        assert_eq!(l.total_bytes().unwrap(), 1024);
        assert!(ArenaLayout::from_plan(
            &[Region {
                offset: 100,
                bytes: 4
            }],
            1024
        )
        .is_err());
        assert!(ArenaLayout::from_plan(
            &[Region {
                offset: 768,
                bytes: 512
            }],
            1024
        )
        .is_err());
        assert!(ArenaLayout::from_plan(
            &[Region {
                offset: 256,
                bytes: usize::MAX
            }],
            usize::MAX
        )
        .is_err());
    }

    #[test]
    fn region_elements_need_whole_elements() {
        assert_eq!(
            Region {
                offset: 0,
                bytes: 16
            }
            .elements(4)
            .unwrap(),
            4
        );
        assert!(Region {
            offset: 0,
            bytes: 6
        }
        .elements(4)
        .is_err());
        assert!(Region {
            offset: 0,
            bytes: 6
        }
        .elements(0)
        .is_err());
        assert_eq!(DevPtr(0x1000).offset_by(256), DevPtr(0x1100));
        assert!(DevPtr::NULL.is_null());
    }
}
