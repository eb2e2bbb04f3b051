//! The allocation bound as a property: a counting global allocator that aborts the process
//! (libFuzzer records the input as a crash) on any single allocation above `LIMIT` or when the
//! live total of the heap would pass `LIMIT`. A size read from an input that reaches an
//! allocation without being checked against the input's real length or a limit shows up here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest input the bound is stated for (libFuzzer's `-max_len` in the documented commands).
pub const MAX_INPUT: usize = 1 << 20;
/// Most bytes one allocation, or all live allocations together, may take.
pub const LIMIT: usize = 256 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static REPORTED: AtomicUsize = AtomicUsize::new(1 << 20);

struct Bounded;

#[global_allocator]
static GLOBAL: Bounded = Bounded;

/// Aborts with a one-line message; formats into a stack buffer (no allocation in here).
#[cold]
fn over(request: usize, live: usize) -> ! {
    let mut buf = [0u8; 200];
    let mut w: &mut [u8] = &mut buf;
    let _ = writeln!(
        w,
        "ldm-fuzz: allocation bound broken: request of {request} bytes with {live} bytes live (limit {LIMIT})"
    );
    let used = 200 - w.len();
    let _ = std::io::stderr().write_all(&buf[..used]);
    std::process::abort();
}

fn admit(size: usize) {
    let live = LIVE.load(Ordering::Relaxed);
    if size > LIMIT || live.saturating_add(size) > LIMIT {
        over(size, live);
    }
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        admit(layout.size());
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        admit(layout.size());
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old {
            admit(new_size - old);
            if new_size > LIMIT {
                over(new_size, LIVE.load(Ordering::Relaxed));
            }
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > old {
                grew(new_size - old);
                LARGEST.fetch_max(new_size, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// (peak live bytes, largest single allocation) since the process started.
pub fn high_water() -> (usize, usize) {
    (
        PEAK.load(Ordering::Relaxed),
        LARGEST.load(Ordering::Relaxed),
    )
}

/// Prints the high-water marks when the peak reaches the next power of two (from 1 MiB up).
pub fn report_growth() {
    let (peak, largest) = high_water();
    let next = REPORTED.load(Ordering::Relaxed);
    if peak >= next {
        REPORTED.store(peak.next_power_of_two().max(next << 1), Ordering::Relaxed);
        eprintln!("ldm-fuzz: heap peak {peak} bytes, largest single allocation {largest} bytes (limit {LIMIT})");
    }
}
