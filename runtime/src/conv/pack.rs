//! The im2col packing of the implicit GEMM's B blocks: rows `k0..k0+kc` and columns `c0..c0+nc` of
//! the virtual im2col matrix copied from the input volume (zero borders, optional nearest-x2
//! upsampling) into `NR`-wide panels, compiled per microkernel's instruction set; the run copies
//! of AVX-512 and AVX2 are in `pack_avx512.rs` and `pack_avx2.rs`.

#[cfg(target_arch = "x86_64")]
use super::{pack_avx2, pack_avx512};
use super::{ConvGeom, ConvInput};
#[cfg(target_arch = "x86_64")]
use crate::gemm::{Avx2, Avx512};
#[cfg(target_arch = "aarch64")]
use crate::gemm::Neon;
use crate::gemm::{Portable, Tile, NC_MAX};

/// One run of output columns inside a single output row and a single NR panel.
#[derive(Clone, Copy, Default)]
struct Seg {
    od: u32,
    oh: u32,
    ow: u32,
    len: u32,
    /// Offset of the run's first lane in the packed block (for kk = 0).
    dst: u32,
}

/// Copies a short run (the compiler turns the fixed-bound loop into vector moves; `memcpy`
/// calls cost more than the copy at these lengths).
#[inline(always)]
fn copy_run<const NR: usize>(d: &mut [f32], s: &[f32]) {
    if let (Ok(d), Some(Ok(s))) = (<&mut [f32; NR]>::try_from(&mut *d), s.get(..NR).map(<&[f32; NR]>::try_from)) {
        *d = *s;
        return;
    }
    for (x, &y) in d.iter_mut().zip(s) {
        *x = y;
    }
}

/// The im2col packing of a tile: `NR`-wide panels, with the kernel's instruction set.
pub(super) trait PackB: Tile {
    #[allow(clippy::too_many_arguments)]
    fn pack_b(self, g: &ConvGeom, input: &ConvInput, k0: usize, kc: usize, c0: usize, nc: usize, o: [usize; 3], dst: &mut [f32]);
}

#[cfg(target_arch = "x86_64")]
impl PackB for Avx512 {
    #[inline]
    fn pack_b(self, g: &ConvGeom, input: &ConvInput, k0: usize, kc: usize, c0: usize, nc: usize, o: [usize; 3], dst: &mut [f32]) {
        if g.stride == 1 && g.up <= 1 {
            // SAFETY: an `Avx512` value exists only where the CPU has AVX-512F.
            unsafe { pack_b_avx512(g, input, k0, kc, c0, nc, o, dst) }
        } else {
            pack_b_body::<32>(g, input, k0, kc, c0, nc, o, dst, Run::Plain)
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl PackB for Avx2 {
    #[inline]
    fn pack_b(self, g: &ConvGeom, input: &ConvInput, k0: usize, kc: usize, c0: usize, nc: usize, o: [usize; 3], dst: &mut [f32]) {
        // SAFETY: an `Avx2` value exists only where the CPU has AVX2 and FMA.
        unsafe { pack_b_avx2(g, input, k0, kc, c0, nc, o, dst) }
    }
}

#[cfg(target_arch = "aarch64")]
impl PackB for Neon {
    #[inline]
    fn pack_b(self, g: &ConvGeom, input: &ConvInput, k0: usize, kc: usize, c0: usize, nc: usize, o: [usize; 3], dst: &mut [f32]) {
        pack_b_body::<12>(g, input, k0, kc, c0, nc, o, dst, Run::Plain)
    }
}

impl PackB for Portable {
    #[inline]
    fn pack_b(self, g: &ConvGeom, input: &ConvInput, k0: usize, kc: usize, c0: usize, nc: usize, o: [usize; 3], dst: &mut [f32]) {
        pack_b_body::<32>(g, input, k0, kc, c0, nc, o, dst, Run::Plain)
    }
}

/// How one run of a packed row is copied.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Scalar or compiler-vectorised copies.
    Plain,
    /// AVX-512 masked loads and stores (runs of at most 32 lanes).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 masked loads, whole-vector stores (runs of at least 8 lanes; shorter ones plain).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

/// `pack_b_body` for 32-lane panels compiled with AVX-512 so that the run copies inline into it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_b_avx512(g: &ConvGeom, input: &ConvInput, k0: usize, kc: usize, c0: usize, nc: usize, o: [usize; 3], dst: &mut [f32]) {
    pack_b_body::<32>(g, input, k0, kc, c0, nc, o, dst, Run::Avx512)
}

/// `pack_b_body` for the AVX2 kernel's 24-lane panels, compiled with AVX2 (vector copies).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_b_avx2(g: &ConvGeom, input: &ConvInput, k0: usize, kc: usize, c0: usize, nc: usize, o: [usize; 3], dst: &mut [f32]) {
    pack_b_body::<24>(g, input, k0, kc, c0, nc, o, dst, Run::Avx2)
}

/// Packs rows `k0..k0+kc` and columns `c0..c0+nc` of the virtual im2col matrix into NR panels:
/// `dst[(j / NR) * kc * NR + kk * NR + j % NR]`, zero-padded to whole panels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn pack_b_body<const NR: usize>(g: &ConvGeom, input: &ConvInput, k0: usize, kc: usize, c0: usize, nc: usize, o: [usize; 3], dst: &mut [f32], mode: Run) {
    let (ho, wo) = (o[1], o[2]);
    let plane_o = ho * wo;
    let v = g.virt();
    let (vd, vh, vw) = (v[0] as isize, v[1] as isize, v[2] as isize);
    let in_plane = g.hin * g.win;
    let in_chan = input.planes * in_plane;
    let (s, pad, up) = (g.stride as isize, g.pad as isize, g.up);
    let panels = nc.div_ceil(NR);
    // Column runs of this block (at most one per column).
    debug_assert!(nc <= NC_MAX);
    let mut segs = [Seg::default(); NC_MAX];
    let mut nseg = 0;
    let mut j = 0usize;
    while j < nc {
        let col = c0 + j;
        let od = col / plane_o;
        let rem = col % plane_o;
        let (oh, ow) = (rem / wo, rem % wo);
        let lane = j % NR;
        let len = (wo - ow).min(NR - lane).min(nc - j);
        segs[nseg] = Seg { od: od as u32, oh: oh as u32, ow: ow as u32, len: len as u32, dst: ((j / NR) * kc * NR + lane) as u32 };
        nseg += 1;
        j += len;
    }
    let segs = &segs[..nseg];
    let fast = s == 1 && up == 0;
    let (mut ci, mut kd, mut kh, mut kw) = {
        let kk3 = g.k * g.k * g.k;
        let t = k0 % kk3;
        (k0 / kk3, t / (g.k * g.k), (t / g.k) % g.k, t % g.k)
    };
    let mut kk = 0;
    while kk < kc {
        let chan = &input.data[ci * in_chan..(ci + 1) * in_chan];
        // The three kw taps of a kernel row share one source row: do them together.
        let taps = if g.k == 3 && kw == 0 && kk + 3 <= kc { 3 } else { 1 };
        for sg in segs {
            let len = sg.len as usize;
            let zd = sg.od as isize * s + kd as isize - pad;
            let zh = sg.oh as isize * s + kh as isize - pad;
            if zd < 0 || zd >= vd || zh < 0 || zh >= vh {
                for t in 0..taps {
                    let at = sg.dst as usize + (kk + t) * NR;
                    dst[at..at + len].fill(0.0);
                }
                continue;
            }
            let sd = (zd >> up) as usize - input.z0;
            let sh = (zh >> up) as usize;
            let row = &chan[sd * in_plane + sh * g.win..sd * in_plane + (sh + 1) * g.win];
            // Floats readable from the row's start (the row, then the rest of the channel).
            let row_avail = chan.len() - (sd * in_plane + sh * g.win);
            for t in 0..taps {
                let at = sg.dst as usize + (kk + t) * NR;
                let d = &mut dst[at..at + len];
                let zw0 = sg.ow as isize * s + (kw + t) as isize - pad;
                #[cfg(target_arch = "x86_64")]
                if mode == Run::Avx512 {
                    let lo = (-zw0).clamp(0, len as isize) as usize;
                    let hi = (vw - zw0).clamp(lo as isize, len as isize) as usize;
                    // SAFETY: lanes outside [lo, hi) are masked (never read); d has `len <= 32`
                    // lanes; this mode is chosen only on CPUs with AVX-512F.
                    unsafe {
                        if up == 0 {
                            pack_avx512::run_copy(d.as_mut_ptr(), len, row.as_ptr(), zw0, lo, hi);
                        } else {
                            pack_avx512::run_up2(d.as_mut_ptr(), len, row.as_ptr(), zw0, lo, hi, g.win);
                        }
                    }
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                if mode == Run::Avx2 && len >= 8 && up <= 1 && s == 1 {
                    let lo = (-zw0).clamp(0, len as isize) as usize;
                    let hi = (vw - zw0).clamp(lo as isize, len as isize) as usize;
                    // SAFETY: lanes outside [lo, hi) (and, upsampling, outside the source row)
                    // are masked (never read); stores cover exactly d's `len` lanes; this mode is
                    // chosen only on CPUs with AVX2.
                    unsafe {
                        if up == 0 {
                            pack_avx2::run_copy(d.as_mut_ptr(), len, row.as_ptr(), zw0, lo, hi);
                        } else {
                            pack_avx2::run_up2(d.as_mut_ptr(), len, row.as_ptr(), zw0, lo, hi, g.win, row_avail);
                        }
                    }
                    continue;
                }
                if fast {
                    let lo = (-zw0).clamp(0, len as isize) as usize;
                    let hi = (vw - zw0).clamp(lo as isize, len as isize) as usize;
                    d[..lo].fill(0.0);
                    if hi > lo {
                        let src0 = (zw0 + lo as isize) as usize;
                        copy_run::<NR>(&mut d[lo..hi], &row[src0..src0 + hi - lo]);
                    }
                    d[hi..].fill(0.0);
                } else {
                    for (i, x) in d.iter_mut().enumerate() {
                        let zw = zw0 + i as isize * s;
                        *x = if zw < 0 || zw >= vw { 0.0 } else { row[(zw >> up) as usize] };
                    }
                }
            }
        }
        for _ in 0..taps {
            kw += 1;
            if kw == g.k {
                kw = 0;
                kh += 1;
                if kh == g.k {
                    kh = 0;
                    kd += 1;
                    if kd == g.k {
                        kd = 0;
                        ci += 1;
                    }
                }
            }
        }
        kk += taps;
    }
    // Zero the padding columns of the last panel.
    let tail = panels * NR - nc;
    if tail > 0 {
        let base = (panels - 1) * kc * NR;
        for kk in 0..kc {
            dst[base + kk * NR + NR - tail..base + kk * NR + NR].fill(0.0);
        }
    }
}
