//! The GEMM core of every convolution and linear layer: weights pre-packed once at load into
//! MR-row panels per KC block, and an MR x NR register-tile microkernel (AVX-512 when the CPU has
//! it, portable otherwise) that accumulates `C += A * B` over one packed B panel.

use std::sync::OnceLock;

/// Rows of the register tile (output channels).
pub const MR: usize = 8;
/// Columns of the register tile (output voxels): two 16-lane vectors.
pub const NR: usize = 32;
/// Depth of one packed block.
pub const KC: usize = 128;

/// A weight matrix `[M, K]` packed for the microkernel: for each KC block (in order), the
/// `ceil(M / MR)` panels of `kc x MR` values (row-padded with zeros).
#[derive(Debug, Clone)]
pub struct PackedA {
    pub m: usize,
    pub k: usize,
    pub m_pad: usize,
    pub data: Vec<f32>,
}

impl PackedA {
    /// Packs a row-major `[m, k]` matrix.
    pub fn pack(w: &[f32], m: usize, k: usize) -> PackedA {
        let m_pad = m.div_ceil(MR) * MR;
        let mut data = vec![0f32; m_pad * k];
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let block = &mut data[k0 * m_pad..(k0 + kc) * m_pad];
            for p in 0..m_pad / MR {
                let panel = &mut block[p * kc * MR..(p + 1) * kc * MR];
                for kk in 0..kc {
                    for r in 0..MR {
                        let row = p * MR + r;
                        if row < m {
                            panel[kk * MR + r] = w[row * k + k0 + kk];
                        }
                    }
                }
            }
            k0 += kc;
        }
        PackedA { m, k, m_pad, data }
    }

    /// The packed panel `p` (rows `p*MR..`) of the KC block starting at `k0` with depth `kc`.
    #[inline]
    pub fn panel(&self, k0: usize, kc: usize, p: usize) -> &[f32] {
        let base = k0 * self.m_pad + p * kc * MR;
        &self.data[base..base + kc * MR]
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

type KernelFn = unsafe fn(usize, usize, *const f32, *const f32, *mut f32, usize, usize);

fn select() -> KernelFn {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return avx512::kernel;
        }
    }
    portable_kernel
}

static KERNEL: OnceLock<KernelFn> = OnceLock::new();

/// Selects the microkernel once (call at load so that `generate` never initialises anything).
pub fn init() {
    let _ = KERNEL.get_or_init(select);
}

/// `C[rows, cols] += A_panel * B_panel` where `a` is a packed `kc x MR` panel, `b` a packed
/// `kc x NR` panel, `c` row-major with stride `ldc`; `rows <= MR`, `cols <= NR`.
#[inline]
pub fn microkernel(kc: usize, rows: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, cols: usize) {
    debug_assert!((1..=MR).contains(&rows) && (1..=NR).contains(&cols));
    debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    debug_assert!(c.len() >= (rows - 1) * ldc + cols);
    let f = *KERNEL.get_or_init(select);
    // SAFETY: bounds asserted above (and guaranteed by the callers' tiling).
    unsafe { f(kc, rows, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, cols) }
}

unsafe fn portable_kernel(kc: usize, rows: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

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
        let m1: __mmask16 = if cols >= 32 { 0xffff } else if cols <= 16 { 0 } else { ((1u32 << (cols - 16)) - 1) as u16 };
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

    pub unsafe fn kernel(kc: usize, rows: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_with_naive_product() {
        init();
        let (m, k) = (7usize, 150usize);
        let w: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let pa = PackedA::pack(&w, m, k);
        let bmat: Vec<f32> = (0..k * NR).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
        let cols = 21;
        let mut c = vec![0f32; m * cols];
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let bp = &bmat[k0 * NR..(k0 + kc) * NR];
            microkernel(kc, m, pa.panel(k0, kc, 0), bp, &mut c, cols, cols);
            k0 += kc;
        }
        for r in 0..m {
            for j in 0..cols {
                let want: f32 = (0..k).map(|kk| w[r * k + kk] * bmat[kk * NR + j]).sum();
                assert!((c[r * cols + j] - want).abs() < 1e-3, "{r},{j}");
            }
        }
    }
}

// The AVX-512 dispatch spells out row counts below MR.
const _: () = assert!(MR == 8);
