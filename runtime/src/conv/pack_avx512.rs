//! AVX-512 packing of one run: masked loads give the zero borders for free.
//! The per-ISA half of `conv`'s B packing (`pack_b_body` chooses by the selected kernel).

use std::arch::x86_64::*;

fn bits(lo: usize, hi: usize) -> u32 {
    if hi <= lo {
        0
    } else {
        (((1u64 << hi) - 1) as u32) & !(((1u64 << lo) - 1) as u32)
    }
}

/// `d[i] = row[zw0 + i]` for `i` in `lo..hi`, 0 for other `i < len` (`len <= 32`).
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn run_copy(d: *mut f32, len: usize, row: *const f32, zw0: isize, lo: usize, hi: usize) {
    let v = bits(lo, hi);
    let src = row.wrapping_offset(zw0);
    let l = bits(0, len);
    let a = _mm512_maskz_loadu_ps(v as u16, src);
    _mm512_mask_storeu_ps(d, l as u16, a);
    // Short runs (rows narrower than 16 voxels) need no second half.
    if len > 16 {
        let b = _mm512_maskz_loadu_ps((v >> 16) as u16, src.wrapping_add(16));
        _mm512_mask_storeu_ps(d.add(16), (l >> 16) as u16, b);
    }
}

/// Nearest x2 upsampling: `d[i] = row[(zw0 + i) >> 1]` for `i` in `lo..hi`, 0 elsewhere.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn run_up2(d: *mut f32, len: usize, row: *const f32, zw0: isize, lo: usize, hi: usize, win: usize) {
    let base = zw0 >> 1;
    let par = (zw0 & 1) as i32;
    let j_lo = (-base).clamp(0, 32) as usize;
    let j_hi = (win as isize - base).clamp(0, 32) as usize;
    let sv = bits(j_lo, j_hi);
    let src = row.wrapping_offset(base);
    let s0 = _mm512_maskz_loadu_ps(sv as u16, src);
    let s1 = _mm512_maskz_loadu_ps((sv >> 16) as u16, src.wrapping_add(16));
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let i0 = _mm512_srli_epi32::<1>(_mm512_add_epi32(iota, _mm512_set1_epi32(par)));
    let i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(8));
    let v = bits(lo, hi);
    let a = _mm512_maskz_mov_ps(v as u16, _mm512_permutex2var_ps(s0, i0, s1));
    let b = _mm512_maskz_mov_ps((v >> 16) as u16, _mm512_permutex2var_ps(s0, i1, s1));
    let l = bits(0, len);
    _mm512_mask_storeu_ps(d, l as u16, a);
    _mm512_mask_storeu_ps(d.add(16), (l >> 16) as u16, b);
}
