//! The portable microkernel: an 8x32 tile in plain Rust, for CPUs without a SIMD kernel here
//! (and the reference the SIMD kernels are tested against).

use super::{Kernel, Tile, MR};

const NR: usize = 32;

/// The portable kernel (every CPU runs it).
#[derive(Debug, Clone, Copy)]
pub struct Portable;

impl Tile for Portable {
    const KERNEL: Kernel = Kernel::Portable;
    const NR: usize = NR;
    const NC: usize = 512;

    #[allow(clippy::needless_range_loop)]
    unsafe fn run(self, kc: usize, rows: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
        let mut acc = [[0f32; NR]; MR];
        for k in 0..kc {
            let bk = std::slice::from_raw_parts(b.add(k * NR), NR);
            for r in 0..rows {
                let av = *a.add(k * MR + r);
                for j in 0..NR {
                    acc[r][j] += av * bk[j];
                }
            }
        }
        for r in 0..rows {
            for j in 0..cols {
                *c.add(r * ldc + j) += acc[r][j];
            }
        }
    }
}
