//! The AVX-512 microkernel: an 8x32 register tile (16 zmm accumulators, two B vectors, one
//! broadcast of A per row), masked stores for edge columns.

use std::arch::x86_64::*;

use super::{Kernel, Tile, MR};

const NR: usize = 32;

/// Proof that the CPU has AVX-512F.
#[derive(Debug, Clone, Copy)]
pub struct Avx512(());

impl Avx512 {
    pub fn new() -> Option<Avx512> {
        std::is_x86_feature_detected!("avx512f").then_some(Avx512(()))
    }
}

impl Tile for Avx512 {
    const KERNEL: Kernel = Kernel::Avx512;
    const NR: usize = NR;
    const NC: usize = 512;

    #[inline]
    unsafe fn run(self, kc: usize, rows: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
        match rows {
            1 => tile::<1>(kc, a, b, c, ldc, cols),
            2 => tile::<2>(kc, a, b, c, ldc, cols),
            3 => tile::<3>(kc, a, b, c, ldc, cols),
            4 => tile::<4>(kc, a, b, c, ldc, cols),
            5 => tile::<5>(kc, a, b, c, ldc, cols),
            6 => tile::<6>(kc, a, b, c, ldc, cols),
            7 => tile::<7>(kc, a, b, c, ldc, cols),
            _ => tile::<MR>(kc, a, b, c, ldc, cols),
        }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize>(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let b0 = _mm512_loadu_ps(bp);
        let b1 = _mm512_loadu_ps(bp.add(16));
        for r in 0..R {
            let av = _mm512_set1_ps(*ap.add(r));
            lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
            hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    let m0: __mmask16 = if cols >= 16 { 0xffff } else { ((1u32 << cols) - 1) as u16 };
    let m1: __mmask16 = if cols >= 32 {
        0xffff
    } else if cols <= 16 {
        0
    } else {
        ((1u32 << (cols - 16)) - 1) as u16
    };
    for r in 0..R {
        let cp = c.add(r * ldc);
        let c0 = _mm512_maskz_loadu_ps(m0, cp);
        _mm512_mask_storeu_ps(cp, m0, _mm512_add_ps(c0, lo[r]));
        if m1 != 0 {
            let c1 = _mm512_maskz_loadu_ps(m1, cp.add(16));
            _mm512_mask_storeu_ps(cp.add(16), m1, _mm512_add_ps(c1, hi[r]));
        }
    }
}

// The dispatch above spells out row counts below MR.
const _: () = assert!(MR == 8);
