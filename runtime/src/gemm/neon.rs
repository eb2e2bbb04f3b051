//! The aarch64 NEON microkernel: an 8x12 register tile (24 q-register accumulators, three B
//! vectors, the 8 A values of a step in two vectors used lane by lane).

use std::arch::aarch64::*;

use super::{Kernel, Tile, MR};

const NR: usize = 12;

/// Proof that the CPU has NEON (every aarch64 CPU this builds for).
#[derive(Debug, Clone, Copy)]
pub struct Neon(());

impl Neon {
    pub fn new() -> Option<Neon> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
    }
}

impl Tile for Neon {
    const KERNEL: Kernel = Kernel::Neon;
    const NR: usize = NR;
    const NC: usize = 480;

    #[inline]
    unsafe fn run(self, kc: usize, rows: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
        tile(kc, rows, a, b, c, ldc, cols)
    }
}

/// All MR rows are computed (the panel's padding rows are zeros); only `rows` are stored.
#[target_feature(enable = "neon")]
unsafe fn tile(kc: usize, rows: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
    let z = vdupq_n_f32(0.0);
    let mut acc = [[z; 3]; MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let a0 = vld1q_f32(ap);
        let a1 = vld1q_f32(ap.add(4));
        let bv = [vld1q_f32(bp), vld1q_f32(bp.add(4)), vld1q_f32(bp.add(8))];
        for v in 0..3 {
            acc[0][v] = vfmaq_laneq_f32::<0>(acc[0][v], bv[v], a0);
            acc[1][v] = vfmaq_laneq_f32::<1>(acc[1][v], bv[v], a0);
            acc[2][v] = vfmaq_laneq_f32::<2>(acc[2][v], bv[v], a0);
            acc[3][v] = vfmaq_laneq_f32::<3>(acc[3][v], bv[v], a0);
            acc[4][v] = vfmaq_laneq_f32::<0>(acc[4][v], bv[v], a1);
            acc[5][v] = vfmaq_laneq_f32::<1>(acc[5][v], bv[v], a1);
            acc[6][v] = vfmaq_laneq_f32::<2>(acc[6][v], bv[v], a1);
            acc[7][v] = vfmaq_laneq_f32::<3>(acc[7][v], bv[v], a1);
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    for (r, row) in acc.iter().enumerate().take(rows) {
        let cp = c.add(r * ldc);
        for (v, &x) in row.iter().enumerate() {
            let n = cols.saturating_sub(4 * v).min(4);
            if n == 4 {
                vst1q_f32(cp.add(4 * v), vaddq_f32(vld1q_f32(cp.add(4 * v)), x));
            } else if n > 0 {
                let mut t = [0f32; 4];
                vst1q_f32(t.as_mut_ptr(), x);
                for (i, &y) in t.iter().enumerate().take(n) {
                    *cp.add(4 * v + i) += y;
                }
            }
        }
    }
}

const _: () = assert!(MR == 8);
