//! Reading a corrupt or hostile blob never makes a single allocation larger than the file.
//!
//! A counting global allocator records the largest single allocation made while `Blob::from_bytes`
//! runs (the input buffer itself is allocated before). One test in this binary, so no other test
//! thread pollutes the measurement.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use ldm_weights::*;

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if ARMED.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Largest single allocation while reading `bytes`; also returns whether it was accepted.
fn largest_allocation(bytes: Vec<u8>) -> (usize, bool) {
    LARGEST.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let ok = Blob::from_bytes(bytes).is_ok();
    ARMED.store(false, Ordering::Relaxed);
    (LARGEST.load(Ordering::Relaxed), ok)
}

#[test]
fn no_allocation_exceeds_the_file() {
    let bytes = blob_bytes(&small_config(), DType::F32);
    let (header, _) = raw_header(&bytes);
    let mut cases: Vec<Vec<u8>> = vec![bytes.clone()];
    cases.extend((0..bytes.len()).step_by(97).map(|l| bytes[..l].to_vec()));
    for hl in [u64::MAX, 1 << 40, bytes.len() as u64 - 28] {
        let mut b = bytes.clone();
        b[12..20].copy_from_slice(&hl.to_le_bytes());
        reseal(&mut b);
        cases.push(b);
    }
    // Hostile lengths inside a checksum-valid header: table count, name length, ndim.
    let mut name_len = vec![1u8];
    name_len.extend(varint_u64(u64::MAX - 7));
    let mut name_32m = vec![1u8];
    name_32m.extend(varint_u64(32 << 20));
    let mut ndim = vec![1u8, 1, b'a', 0];
    ndim.extend(varint_u64(1 << 40));
    for raw in [
        varint_u64(u64::MAX),
        varint_u64((1 << 20) - 1),
        name_len,
        name_32m,
        ndim,
        vec![250, 0xff, 0xff],
    ] {
        cases.push(splice_header(&bytes, &header_with_raw_table(&header, &raw)));
    }
    let mut h = header.clone();
    h.tensors[0].shape = vec![1 << 40, 1 << 20];
    cases.push(rebuild(&bytes, &h));
    let mut h = header.clone();
    h.config.decoder.as_mut().unwrap().num_res_blocks = vec![u32::MAX, 1];
    cases.push(rebuild(&bytes, &h));

    for (i, case) in cases.into_iter().enumerate() {
        let len = case.len();
        let (largest, ok) = largest_allocation(case);
        if i == 0 {
            // The accepted blob's largest allocation is its table, well below the file size.
            assert!(largest > 0 && largest < len / 4, "{largest} bytes for {len}");
        }
        assert_eq!(ok, i == 0, "case {i}");
        assert!(
            largest <= len.max(64),
            "case {i}: allocated {largest} bytes for a {len}-byte file"
        );
    }
}
