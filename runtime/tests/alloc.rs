//! `generate` performs zero heap allocations after `Runtime::new` (counting global allocator,
//! counted on every thread, including the pool's workers), and is bit-identical whatever the
//! thread count. Own test binary so that the allocator counts nothing else.

mod common;

use ldm_runtime::{Options, Runtime, Sampler, WeightStore};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn generate_allocates_nothing_and_ignores_thread_count() {
    let cfg = common::config(true, true, 0.8, [8, 8, 8, 4]);
    let store = WeightStore::random(&cfg, 3).unwrap();
    let mut outs = Vec::new();
    for (threads, sampler) in [(2, Sampler::Ddim { eta: 0.5 }), (1, Sampler::Ddim { eta: 0.5 }), (3, Sampler::Ddim { eta: 0.5 })] {
        let opts = Options { threads: Some(threads), steps: Some(4), sampler: Some(sampler), batch: 2, ..Options::default() };
        let mut rt = Runtime::from_store(&cfg, &store, opts).unwrap();
        let mut out = vec![0f32; 2 * rt.output_shape().iter().product::<usize>()];
        let mut events = 0usize;
        ALLOCS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        let r = rt.generate(7, &mut out, &mut |_| events += 1);
        COUNTING.store(false, Ordering::SeqCst);
        r.unwrap();
        assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "generate allocated with {threads} threads");
        assert_eq!(events, 2 * 5);
        assert!(out.iter().all(|v| v.is_finite()));
        outs.push(out);
    }
    // Slab decoding under a memory bound (70 % of the full plan: the workspaces and state, which
    // slabs cannot shrink, must still fit): also allocation-free, equal within 1e-6.
    let opts = Options { threads: Some(2), steps: Some(4), sampler: Some(Sampler::Ddim { eta: 0.5 }), batch: 2, ..Options::default() };
    let full = Runtime::from_store(&cfg, &store, opts.clone()).unwrap();
    let needed = full.plan().total_bytes - full.plan().weights_bytes;
    drop(full);
    let mut rt = Runtime::from_store(&cfg, &store, Options { max_memory: Some(needed * 7 / 10), ..opts }).unwrap();
    assert!(rt.plan().decoder_slabs > 1);
    let mut out = vec![0f32; outs[0].len()];
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let r = rt.generate(7, &mut out, &mut |_| {});
    COUNTING.store(false, Ordering::SeqCst);
    r.unwrap();
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "slab generate allocated");
    let num: f64 = out.iter().zip(&outs[0]).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = outs[0].iter().map(|b| (*b as f64).powi(2)).sum();
    assert!((num / den).sqrt() < 1e-6, "slab vs full {}", (num / den).sqrt());
    assert_eq!(outs[0], outs[1], "2 threads vs 1 thread");
    assert_eq!(outs[0], outs[2], "2 threads vs 3 threads");
    let vol = outs[0].len() / 2;
    assert_ne!(outs[0][..vol], outs[0][vol..], "batch items must differ");
}
