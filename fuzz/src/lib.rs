//! The shared harness of every fuzz target: the allocation bound (`bound`), input files on disk
//! for readers that take a path (`scratch`), and builders of structured inputs (zip archives,
//! checksums, deterministic filler bytes) in `build`.
//!
//! Every target wraps its body in `run`, which skips inputs above `MAX_INPUT` (the bound is
//! stated for inputs of at most 1 MiB) and reports the heap's high-water mark as it grows.

pub mod bound;
pub mod build;
pub mod scratch;

pub use bound::{LIMIT, MAX_INPUT};

/// The property every checkpoint reader's output must have: one value per element of each
/// tensor's shape.
pub fn check_tensors(tensors: &[ldm_import::SourceTensor]) {
    for t in tensors {
        assert_eq!(t.data.len(), t.shape.iter().product::<usize>(), "{}", t.name);
    }
}

/// Runs `body` on `data` when it is at most `MAX_INPUT` bytes; afterwards prints the heap's
/// peak and largest single allocation whenever they reach a new power of two (so a long run's
/// log shows how close any input came to the bound).
pub fn run(data: &[u8], body: impl FnOnce(&[u8])) {
    if data.len() > MAX_INPUT {
        return;
    }
    body(data);
    bound::report_growth();
}
