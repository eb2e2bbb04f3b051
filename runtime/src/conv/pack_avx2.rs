//! AVX2 packing of one run: masked loads give the zero borders; whole 8-lane stores, the last
//! one overlapping the previous (no masked stores, which are slow on some AMD cores).
//! The per-ISA half of `conv`'s B packing (`pack_b_body` chooses by the selected kernel).

use std::arch::x86_64::*;

/// Lanes `j` of an 8-lane chunk with `lo <= j < hi` (bounds relative to the chunk).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn window(lo: isize, hi: isize) -> __m256i {
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let ge = _mm256_cmpgt_epi32(iota, _mm256_set1_epi32(lo.clamp(-1, 8) as i32 - 1));
    let lt = _mm256_cmpgt_epi32(_mm256_set1_epi32(hi.clamp(-1, 8) as i32), iota);
    _mm256_and_si256(ge, lt)
}

/// Offsets of the 8-lane chunks covering `0..len` (`len >= 8`): 0, 8, .., then `len - 8`.
#[inline(always)]
#[allow(clippy::manual_is_multiple_of)]
fn chunks(len: usize) -> impl Iterator<Item = usize> {
    (0..len / 8).map(|c| 8 * c).chain((len % 8 != 0).then_some(len - 8))
}

/// `d[i] = row[zw0 + i]` for `i` in `lo..hi`, 0 for other `i < len`; `len >= 8`.
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn run_copy(d: *mut f32, len: usize, row: *const f32, zw0: isize, lo: usize, hi: usize) {
    for c in chunks(len) {
        let p = row.wrapping_offset(zw0 + c as isize);
        let v = if lo <= c && c + 8 <= hi {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, window(lo as isize - c as isize, hi as isize - c as isize))
        };
        _mm256_storeu_ps(d.add(c), v);
    }
}

/// Nearest x2 upsampling: `d[i] = row[(zw0 + i) >> 1]` for `i` in `lo..hi`, 0 for other
/// `i < len`; `len >= 8`; the source row has `win` values and `avail >= win` floats may be
/// read from its start (the rest of the input: unmasked loads where they stay inside).
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn run_up2(d: *mut f32, len: usize, row: *const f32, zw0: isize, lo: usize, hi: usize, win: usize, avail: usize) {
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for c in chunks(len) {
        let z = zw0 + c as isize;
        let base = z >> 1;
        let p = row.wrapping_offset(base);
        let s = if base >= 0 && base as usize + 8 <= avail {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, window(-base, win as isize - base))
        };
        let idx = _mm256_srli_epi32::<1>(_mm256_add_epi32(iota, _mm256_set1_epi32((z & 1) as i32)));
        let v = _mm256_permutevar8x32_ps(s, idx);
        if lo <= c && c + 8 <= hi {
            _mm256_storeu_ps(d.add(c), v);
        } else {
            let keep = window(lo as isize - c as isize, hi as isize - c as isize);
            _mm256_storeu_ps(d.add(c), _mm256_and_ps(v, _mm256_castsi256_ps(keep)));
        }
    }
}
