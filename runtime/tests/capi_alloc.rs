//! `brats_ldm_generate` through the C ABI performs zero heap allocations once the generator
//! exists (registry check, busy flag, progress callback, clearing the last error included),
//! counted on every thread by a global allocator. Own test binary so that nothing else counts.

mod capi_support;

use ldm_runtime::capi::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

unsafe extern "C" fn count_progress(_p: *const BratsLdmProgress, user: *mut c_void) -> i32 {
    unsafe { *user.cast::<u32>() += 1 };
    0
}

#[test]
fn generate_through_the_c_abi_allocates_nothing() {
    let path = CString::new(capi_support::fixture_blob().to_str().unwrap()).unwrap();
    let mut options = std::mem::MaybeUninit::<BratsLdmOptions>::uninit();
    unsafe {
        assert_eq!(
            brats_ldm_options_init(options.as_mut_ptr(), std::mem::size_of::<BratsLdmOptions>()),
            0
        );
    }
    let mut options = unsafe { options.assume_init() };
    options.steps = 3;
    options.threads = 2;
    let mut g = std::ptr::null_mut();
    assert_eq!(
        unsafe { brats_ldm_create_from_path(path.as_ptr(), &options, &mut g) },
        0
    );
    let mut n = 0usize;
    assert_eq!(unsafe { brats_ldm_get_output_len(g, &mut n) }, 0);
    let mut out = vec![0f32; n];
    let mut calls = 0u32;
    let user = (&mut calls as *mut u32).cast::<c_void>();

    // Warm-up (first use of this thread's last-error slot), then a failing call that leaves a
    // message behind, so the counted call below also has to clear it.
    assert_eq!(
        unsafe { brats_ldm_generate(g, 1, out.as_mut_ptr(), n, Some(count_progress), user) },
        0
    );
    assert_ne!(
        unsafe { brats_ldm_generate(g, 1, out.as_mut_ptr(), n - 1, None, std::ptr::null_mut()) },
        0
    );

    calls = 0;
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let status = unsafe { brats_ldm_generate(g, 5, out.as_mut_ptr(), n, Some(count_progress), user) };
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(status, 0);
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "brats_ldm_generate allocated");
    assert_eq!(calls, 3 + 1, "progress calls: 3 steps + decoding");
    assert!(out.iter().all(|v| v.is_finite()));
    assert_eq!(
        unsafe { std::ffi::CStr::from_ptr(brats_ldm_last_error()) }.to_bytes(),
        b""
    );
    assert_eq!(unsafe { brats_ldm_destroy(g) }, 0);
}
