//! The AVX2+FMA microkernel: a 4x24 register tile (12 ymm accumulators, three B vectors, one
//! broadcast of A: all 16 ymm registers), run once per group of 4 rows of the 8-row A panel.
//! The full-height tile's loop is inline assembly: the compiler's register allocation of 16 live
//! ymm values spills an accumulator every step (measured at a quarter of the FMA peak). Edge
//! columns use masked loads and stores.

use std::arch::x86_64::*;

use super::{Kernel, Tile, MR};

/// Rows of the register tile.
const RG: usize = 4;
/// Vectors of 8 lanes per tile row.
const NV: usize = 3;
const NR: usize = 8 * NV;

/// Proof that the CPU has AVX2 and FMA.
#[derive(Debug, Clone, Copy)]
pub struct Avx2(());

impl Avx2 {
    pub fn new() -> Option<Avx2> {
        (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")).then_some(Avx2(()))
    }
}

impl Tile for Avx2 {
    const KERNEL: Kernel = Kernel::Avx2;
    const NR: usize = NR;
    const NC: usize = 480;

    #[inline]
    unsafe fn run(self, kc: usize, rows: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
        let mut r0 = 0;
        while r0 < rows {
            let (ag, cg) = (a.add(r0), c.add(r0 * ldc));
            match rows - r0 {
                1 => tile::<1>(kc, ag, b, cg, ldc, cols),
                2 => tile::<2>(kc, ag, b, cg, ldc, cols),
                3 => tile::<3>(kc, ag, b, cg, ldc, cols),
                _ => store(full(kc, ag, b), cg, ldc, cols),
            }
            r0 += RG;
        }
    }
}

/// Lane mask of the first `n` lanes (`n <= 8`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn lanes(n: usize) -> __m256i {
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), iota)
}

/// The 4x24 products over `kc` steps: rows `a[k * MR + r]`, `r < 4`, times `b[k * NR ..]`.
#[target_feature(enable = "avx2,fma")]
unsafe fn full(kc: usize, a: *const f32, b: *const f32) -> [[__m256; NV]; RG] {
    let z = _mm256_setzero_ps();
    let (mut c00, mut c01, mut c02, mut c10, mut c11, mut c12) = (z, z, z, z, z, z);
    let (mut c20, mut c21, mut c22, mut c30, mut c31, mut c32) = (z, z, z, z, z, z);
    if kc > 0 {
        // SAFETY (caller): `a` holds kc * MR floats and `b` kc * NR; each step reads a[0..4]
        // and b[0..24], then advances by MR and NR floats. Same order of FMAs per element as
        // `tile`: acc += a[k, r] * b[k, j] for k = 0, 1, ...
        std::arch::asm!(
            "2:",
            "vmovups {b0}, ymmword ptr [{bp}]",
            "vmovups {b1}, ymmword ptr [{bp} + 32]",
            "vmovups {b2}, ymmword ptr [{bp} + 64]",
            "vbroadcastss {av}, dword ptr [{ap}]",
            "vfmadd231ps {c00}, {av}, {b0}",
            "vfmadd231ps {c01}, {av}, {b1}",
            "vfmadd231ps {c02}, {av}, {b2}",
            "vbroadcastss {av}, dword ptr [{ap} + 4]",
            "vfmadd231ps {c10}, {av}, {b0}",
            "vfmadd231ps {c11}, {av}, {b1}",
            "vfmadd231ps {c12}, {av}, {b2}",
            "vbroadcastss {av}, dword ptr [{ap} + 8]",
            "vfmadd231ps {c20}, {av}, {b0}",
            "vfmadd231ps {c21}, {av}, {b1}",
            "vfmadd231ps {c22}, {av}, {b2}",
            "vbroadcastss {av}, dword ptr [{ap} + 12]",
            "vfmadd231ps {c30}, {av}, {b0}",
            "vfmadd231ps {c31}, {av}, {b1}",
            "vfmadd231ps {c32}, {av}, {b2}",
            "add {ap}, 32",
            "add {bp}, 96",
            "dec {k}",
            "jnz 2b",
            ap = inout(reg) a => _,
            bp = inout(reg) b => _,
            k = inout(reg) kc => _,
            c00 = inout(ymm_reg) c00, c01 = inout(ymm_reg) c01, c02 = inout(ymm_reg) c02,
            c10 = inout(ymm_reg) c10, c11 = inout(ymm_reg) c11, c12 = inout(ymm_reg) c12,
            c20 = inout(ymm_reg) c20, c21 = inout(ymm_reg) c21, c22 = inout(ymm_reg) c22,
            c30 = inout(ymm_reg) c30, c31 = inout(ymm_reg) c31, c32 = inout(ymm_reg) c32,
            b0 = out(ymm_reg) _, b1 = out(ymm_reg) _, b2 = out(ymm_reg) _, av = out(ymm_reg) _,
            options(nostack, readonly, pure),
        );
    }
    [[c00, c01, c02], [c10, c11, c12], [c20, c21, c22], [c30, c31, c32]]
}

/// Edge tiles of fewer than 4 rows (few registers: the compiler's code is at peak).
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize>(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm256_loadu_ps(bp.add(8 * v));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*ap.add(r));
            for (x, &bx) in row.iter_mut().zip(&bv) {
                *x = _mm256_fmadd_ps(av, bx, *x);
            }
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    store(acc, c, ldc, cols)
}

/// `C[r, j] += acc[r][j]` for `j < cols` (masked partial vectors).
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn store<const R: usize>(acc: [[__m256; NV]; R], c: *mut f32, ldc: usize, cols: usize) {
    for v in 0..NV {
        let n = cols.saturating_sub(8 * v).min(8);
        if n == 8 {
            for r in 0..R {
                let cp = c.add(r * ldc + 8 * v);
                _mm256_storeu_ps(cp, _mm256_add_ps(_mm256_loadu_ps(cp), acc[r][v]));
            }
        } else if n > 0 {
            let m = lanes(n);
            for r in 0..R {
                let cp = c.add(r * ldc + 8 * v);
                _mm256_maskstore_ps(cp, m, _mm256_add_ps(_mm256_maskload_ps(cp, m), acc[r][v]));
            }
        }
    }
}

// The assembly's pointer steps (32 and 96 bytes) and the row groups.
const _: () = assert!(MR * 4 == 32 && NR * 4 == 96 && MR == 2 * RG);
