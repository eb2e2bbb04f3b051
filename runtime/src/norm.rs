//! GroupNorm: global statistics (f64 accumulation) folded into a per-channel scale and shift,
//! and the fused normalise(+SiLU) transform applied to any range of planes.

use crate::fastmath::silu;
use crate::pool::Pool;

/// Shared output pointer for per-group writes.
#[derive(Clone, Copy)]
struct Out(*mut f32);
unsafe impl Send for Out {}
unsafe impl Sync for Out {}
impl Out {
    unsafe fn at(&self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

/// Sum and sum of squares of a slice (16 f32 lanes per 4096-element chunk, chunks added in f64).
fn moments(x: &[f32]) -> (f64, f64) {
    let (mut s, mut ss) = (0f64, 0f64);
    for chunk in x.chunks(4096) {
        let mut a = [0f32; 16];
        let mut b = [0f32; 16];
        let mut it = chunk.chunks_exact(16);
        for v in &mut it {
            for l in 0..16 {
                a[l] += v[l];
                b[l] += v[l] * v[l];
            }
        }
        for &v in it.remainder() {
            a[0] += v;
            b[0] += v * v;
        }
        s += a.iter().map(|&v| v as f64).sum::<f64>();
        ss += b.iter().map(|&v| v as f64).sum::<f64>();
    }
    (s, ss)
}

/// Computes `scale_shift[c] = gamma[c] * rstd(g)` and `scale_shift[C + c] = beta[c] - mean(g) * scale`
/// for `x` laid out `[C, P]`.
#[allow(clippy::too_many_arguments)]
pub fn gn_stats(pool: &Pool, x: &[f32], c: usize, p: usize, groups: usize, eps: f32, gamma: &[f32], beta: &[f32], scale_shift: &mut [f32]) {
    debug_assert!(scale_shift.len() >= 2 * c && x.len() >= c * p);
    let cg = c / groups;
    let out = Out(scale_shift.as_mut_ptr());
    pool.for_each_sized(groups, c * p, &|g, _| {
        let xs = &x[g * cg * p..(g + 1) * cg * p];
        let (s, ss) = moments(xs);
        // SAFETY: each group writes only its own channels.
        unsafe { group_scale_shift(s, ss, (cg * p) as f64, g, cg, c, eps, gamma, beta, out) };
    });
}

/// Writes the scale/shift of group `g` from its sums.
#[allow(clippy::too_many_arguments)]
unsafe fn group_scale_shift(s: f64, ss: f64, n: f64, g: usize, cg: usize, c: usize, eps: f32, gamma: &[f32], beta: &[f32], out: Out) {
    let mean = s / n;
    let var = (ss / n - mean * mean).max(0.0);
    let rstd = 1.0 / (var + eps as f64).sqrt();
    for ch in g * cg..(g + 1) * cg {
        let sc = gamma[ch] as f64 * rstd;
        *out.at(ch) = sc as f32;
        *out.at(c + ch) = (beta[ch] as f64 - mean * sc) as f32;
    }
}

/// Adds the sums of planes `z0..z1` of a `[c, planes, plane]` window to `acc`
/// (`acc[2g]` = sum, `acc[2g + 1]` = sum of squares of group `g`).
#[allow(clippy::too_many_arguments)]
pub fn accumulate_moments(pool: &Pool, data: &[f32], c: usize, groups: usize, planes: usize, plane: usize, z0: usize, z1: usize, acc: &mut [f64]) {
    let cg = c / groups;
    #[derive(Clone, Copy)]
    struct Acc(*mut f64);
    unsafe impl Send for Acc {}
    unsafe impl Sync for Acc {}
    impl Acc {
        unsafe fn add(&self, i: usize, v: f64) {
            *self.0.add(i) += v;
        }
    }
    let a = Acc(acc.as_mut_ptr());
    pool.for_each_sized(groups, c * (z1 - z0) * plane, &|g, _| {
        let (mut s, mut ss) = (0f64, 0f64);
        for ch in g * cg..(g + 1) * cg {
            let (x, y) = moments(&data[(ch * planes + z0) * plane..(ch * planes + z1) * plane]);
            s += x;
            ss += y;
        }
        // SAFETY: each group touches only its own two accumulators.
        unsafe {
            a.add(2 * g, s);
            a.add(2 * g + 1, ss);
        }
    });
}

/// Scale/shift from accumulated group sums over `n` values per group.
#[allow(clippy::too_many_arguments)]
pub fn finalize(acc: &[f64], n: f64, c: usize, groups: usize, eps: f32, gamma: &[f32], beta: &[f32], scale_shift: &mut [f32]) {
    let cg = c / groups;
    let out = Out(scale_shift.as_mut_ptr());
    for g in 0..groups {
        // SAFETY: `scale_shift` holds 2c values.
        unsafe { group_scale_shift(acc[2 * g], acc[2 * g + 1], n, g, cg, c, eps, gamma, beta, out) };
    }
}

/// `dst = x * scale + shift` (then SiLU when `act`), for one channel's contiguous values.
#[inline]
pub fn apply(src: &[f32], dst: &mut [f32], scale: f32, shift: f32, act: bool) {
    if act {
        for (y, &v) in dst.iter_mut().zip(src) {
            *y = silu(v * scale + shift);
        }
    } else {
        for (y, &v) in dst.iter_mut().zip(src) {
            *y = v * scale + shift;
        }
    }
}

/// Normalises planes `z0..z1` of every channel of `x` (`[C, D, plane]`) into `dst`
/// (`[C, z1 - z0, plane]`), in parallel over channels.
#[allow(clippy::too_many_arguments)]
pub fn apply_planes(pool: &Pool, x: &[f32], c: usize, d: usize, plane: usize, z0: usize, z1: usize, scale_shift: &[f32], act: bool, dst: &mut [f32]) {
    let nz = z1 - z0;
    let out = Out(dst.as_mut_ptr());
    pool.for_each_sized(c, c * nz * plane * 8, &|ch, _| {
        let src = &x[(ch * d + z0) * plane..(ch * d + z1) * plane];
        // SAFETY: each channel writes its own range.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.at(ch * nz * plane), nz * plane) };
        apply(src, dst, scale_shift[ch], scale_shift[c + ch], act);
    });
}
