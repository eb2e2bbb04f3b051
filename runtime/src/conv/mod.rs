//! 3-D convolution as an implicit GEMM: output `[Cout, P]` = packed weights `[Cout, Cin*k^3]` x
//! a virtual im2col matrix that is never materialised; each `KC x NC` block of it is packed straight
//! from the input volume (optionally nearest-x2-upsampled on the fly). Tasks split the output into
//! (column block, row block) tiles, so results do not depend on the thread count. The B panel
//! width and block width follow the selected microkernel (`gemm::Kernel`). Large 3x3x3
//! convolutions run as Winograd F(2x2x2, 3x3x3) instead (`winograd`, chosen per layer at load;
//! `ConvWeights` says which, `conv_any` dispatches).

// the im2col packing of B blocks, with its per-ISA run copies
mod pack;
#[cfg(target_arch = "x86_64")]
mod pack_avx2;
#[cfg(target_arch = "x86_64")]
mod pack_avx512;
// LDM_CPU_CONV: the algorithm of the 3x3x3 convolutions
pub mod mode;
pub mod winograd;

use crate::gemm::{microkernel, with_tile, Kernel, PackedA, KC, MR, NC_MAX};
use crate::pool::Pool;
use pack::PackB;

/// Shape of one convolution. The input volume `[cin, din, hin, win]` is first upsampled by
/// `2^up` (nearest), then convolved with a `k^3` kernel at `stride` with zero padding `pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub cin: usize,
    pub din: usize,
    pub hin: usize,
    pub win: usize,
    pub up: u32,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub cout: usize,
}

impl ConvGeom {
    pub fn virt(&self) -> [usize; 3] {
        [self.din << self.up, self.hin << self.up, self.win << self.up]
    }
    pub fn out_dims(&self) -> [usize; 3] {
        let v = self.virt();
        let f = |n: usize| (n + 2 * self.pad - self.k) / self.stride + 1;
        [f(v[0]), f(v[1]), f(v[2])]
    }
    pub fn kdim(&self) -> usize {
        self.cin * self.k * self.k * self.k
    }
    pub fn flops(&self) -> f64 {
        let o = self.out_dims();
        2.0 * (self.cout * self.kdim()) as f64 * (o[0] * o[1] * o[2]) as f64
    }
}

/// How the output tile is initialised before the products are accumulated.
#[derive(Clone, Copy)]
pub enum Init<'a> {
    /// `C = bias`.
    Bias,
    /// `C = bias + residual` (residual laid out like C).
    BiasResidual(&'a [f32]),
    /// `C += bias` (C already holds e.g. a shortcut branch).
    Accumulate,
}

/// The input of one call: planes `z0 .. z0 + planes` of the (pre-upsample) input depth.
pub struct ConvInput<'a> {
    pub data: &'a [f32],
    pub z0: usize,
    pub planes: usize,
}

/// The weights of one convolution, in the form its algorithm reads.
#[derive(Debug, Clone)]
pub enum ConvWeights {
    /// Packed `[cout, cin * k^3]` for the implicit GEMM.
    Direct(PackedA),
    /// Transformed for Winograd F(2x2x2, 3x3x3) (`winograd::applies` holds for the geometry).
    Winograd(winograd::WinogradWeights),
}

impl ConvWeights {
    pub fn bytes(&self) -> usize {
        match self {
            ConvWeights::Direct(p) => p.bytes(),
            ConvWeights::Winograd(w) => w.bytes(),
        }
    }
}

/// One call of a convolution, the same for every algorithm: output planes `od0..od1` of `g`
/// into the output window `win` (which the `out` slice holds), from `input`, with `bias` and
/// `init`.
#[derive(Clone, Copy)]
pub struct ConvCall<'a> {
    pub g: &'a ConvGeom,
    pub bias: &'a [f32],
    pub input: &'a ConvInput<'a>,
    pub od0: usize,
    pub od1: usize,
    pub win: OutWindow,
    pub init: Init<'a>,
}

/// The preallocated scratch of a call: `pack` holds `pack_len()` (direct) or
/// `winograd::thread_ws_len` floats per thread, `shared` one im2col matrix (`shared_pack_len`).
#[derive(Clone, Copy)]
pub struct ConvScratch {
    pub pack: PackWs,
    pub shared: PackWs,
}

/// `c` with either kind of weights.
pub fn conv_any(pool: &Pool, c: &ConvCall, w: &ConvWeights, out: &mut [f32], ws: ConvScratch) {
    match w {
        ConvWeights::Direct(p) => conv(pool, c, p, out, ws),
        ConvWeights::Winograd(u) => winograd::conv(pool, c, u, out, ws.pack),
    }
}

/// Per-thread pack buffer length in floats (enough for every kernel).
pub fn pack_len() -> usize {
    KC * NC_MAX
}

/// Raw output pointer shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32, usize);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    /// SAFETY: callers write disjoint ranges.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0, self.1)
    }
}

/// Workspace pointer: one `pack_len()` slice per thread.
#[derive(Clone, Copy)]
pub struct PackWs(pub *mut f32, pub usize);
unsafe impl Send for PackWs {}
unsafe impl Sync for PackWs {}
impl PackWs {
    /// The pack slice of thread `tid`.
    ///
    /// # Safety
    /// Only the thread `tid` may use this slice while it lives, and `(tid + 1) * len` must not
    /// exceed the buffer.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn thread_slice(&self, tid: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(tid * len), len)
    }

    /// Floats `start .. start + len` of the buffer.
    ///
    /// # Safety
    /// The range must be in bounds and used by one thread at a time.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, start: usize, len: usize) -> &mut [f32] {
        debug_assert!(start + len <= self.1);
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// Where the output lives: planes `z0 .. z0 + planes` of the output volume, `[cout, planes, H, W]`.
#[derive(Clone, Copy, Debug)]
pub struct OutWindow {
    pub z0: usize,
    pub planes: usize,
}

/// Computes the call `c` (output planes `od0..od1` of `c.win`, which `out` holds: the whole
/// volume is `OutWindow { z0: 0, planes: D_out }`) on the selected microkernel.
pub fn conv(pool: &Pool, c: &ConvCall, w: &PackedA, out: &mut [f32], ws: ConvScratch) {
    conv_with(crate::gemm::selected(), pool, c, w, out, ws)
}

/// `conv` on microkernel `kernel` (the portable one where the CPU lacks it).
pub fn conv_with(kernel: Kernel, pool: &Pool, c: &ConvCall, w: &PackedA, out: &mut [f32], ws: ConvScratch) {
    with_tile!(kernel, t => conv_tiled(t, pool, c, w, out, ws))
}

fn conv_tiled<T: PackB>(t: T, pool: &Pool, c: &ConvCall, w: &PackedA, out: &mut [f32], scratch: ConvScratch) {
    let ConvCall { g, bias, input, od0, od1, win, init } = *c;
    let ConvScratch { pack: ws, shared } = scratch;
    let o = g.out_dims();
    let plane = o[1] * o[2];
    // Row stride of the output window; columns are counted from the window's first plane.
    let p_total = win.planes * plane;
    let (nr, nc_max) = (T::NR, T::NC);
    {
        let n = (od1 - od0) * plane;
        let (k, m_panels) = (g.kdim(), g.cout.div_ceil(MR));
        if n > 0 && n <= nc_max && n.div_ceil(nr) < 4 * pool.threads() && m_panels > 1 && k * n.div_ceil(nr) * nr <= shared.1 {
            conv_shared(t, pool, c, w, out, shared);
            return;
        }
    }
    debug_assert!(out.len() >= g.cout * p_total);
    debug_assert!(od0 >= win.z0 && od1 <= win.z0 + win.planes);
    debug_assert!(ws.1 >= pool.threads() * pack_len());
    let n0 = (od0 - win.z0) * plane;
    let n = (od1 - od0) * plane;
    if n == 0 {
        return;
    }
    let m = g.cout;
    let k = g.kdim();
    let want = 4 * pool.threads();
    // Smaller column blocks when the volume is small, so that rows need not be split (which
    // would pack the same columns once per row block).
    let nc_blk = (n.div_ceil(want).div_ceil(nr) * nr).clamp(nr, nc_max);
    let n_blocks = n.div_ceil(nc_blk);
    let m_panels = m.div_ceil(MR);
    // Split rows only when there are too few column blocks to feed every thread.
    let m_split = if n_blocks >= want { 1 } else { (want / n_blocks).clamp(1, m_panels) };
    let panels_per = m_panels.div_ceil(m_split);
    let m_blocks = m_panels.div_ceil(panels_per);
    let outp = OutPtr(out.as_mut_ptr(), out.len());
    let tasks = n_blocks * m_blocks;
    let work = m * k * n;
    pool.for_each_sized(tasks, work, &|task, tid| {
        let nb = task / m_blocks;
        let mb = task % m_blocks;
        let c_begin = n0 + nb * nc_blk;
        let nc = nc_blk.min(n0 + n - c_begin);
        let p_begin = mb * panels_per;
        let p_end = (p_begin + panels_per).min(m_panels);
        // SAFETY: each thread owns its pack slice; tasks write disjoint (row, column) tiles.
        let pack = unsafe { ws.thread_slice(tid, pack_len()) };
        let outs = unsafe { outp.slice() };
        let r_begin = p_begin * MR;
        let r_end = (p_end * MR).min(m);
        for r in r_begin..r_end {
            let row = &mut outs[r * p_total + c_begin..r * p_total + c_begin + nc];
            let b = bias[r];
            match init {
                Init::Bias => row.fill(b),
                Init::BiasResidual(res) => {
                    let rr = &res[r * p_total + c_begin..r * p_total + c_begin + nc];
                    for (y, &x) in row.iter_mut().zip(rr) {
                        *y = x + b;
                    }
                }
                Init::Accumulate => row.iter_mut().for_each(|y| *y += b),
            }
        }
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            t.pack_b(g, input, k0, kc, c_begin + win.z0 * plane, nc, o, pack);
            let panels_n = nc.div_ceil(nr);
            for jp in 0..panels_n {
                let bpanel = &pack[jp * kc * nr..(jp + 1) * kc * nr];
                let col = c_begin + jp * nr;
                let cols = nr.min(c_begin + nc - col);
                for p in p_begin..p_end {
                    let rows = MR.min(m - p * MR);
                    let a = w.panel(k0, kc, p);
                    let cstart = p * MR * p_total + col;
                    microkernel(t, kc, rows, a, bpanel, &mut outs[cstart..], p_total, cols);
                }
            }
            k0 += kc;
        }
    });
}


/// Few output columns (deep, small levels): pack the whole im2col matrix once into `shared`
/// (one task per KC block), then split the output rows over the threads, instead of packing the
/// same columns once per row block.
fn conv_shared<T: PackB>(t: T, pool: &Pool, c: &ConvCall, w: &PackedA, out: &mut [f32], shared: PackWs) {
    let ConvCall { g, bias, input, od0, od1, win, init } = *c;
    let o = g.out_dims();
    let plane = o[1] * o[2];
    let p_total = win.planes * plane;
    let c_begin = (od0 - win.z0) * plane;
    let n = (od1 - od0) * plane;
    let nr = T::NR;
    let npad = n.div_ceil(nr) * nr;
    let (m, k) = (g.cout, g.kdim());
    let kblocks = k.div_ceil(KC);
    let work = m * k * n;
    pool.for_each_sized(kblocks, work / m.max(1), &|kb, _| {
        let k0 = kb * KC;
        let kc = KC.min(k - k0);
        // SAFETY: each KC block owns its own range of the shared buffer (checked to fit).
        let dst = unsafe { shared.range(k0 * npad, kc * npad) };
        t.pack_b(g, input, k0, kc, c_begin + win.z0 * plane, n, o, dst);
    });
    let m_panels = m.div_ceil(MR);
    let m_blocks = m_panels.min(4 * pool.threads());
    let panels_per = m_panels.div_ceil(m_blocks);
    let m_blocks = m_panels.div_ceil(panels_per);
    let outp = OutPtr(out.as_mut_ptr(), out.len());
    // SAFETY: read-only from here on.
    let packed: &[f32] = unsafe { std::slice::from_raw_parts(shared.0, k * npad) };
    pool.for_each_sized(m_blocks, work, &|mb, _| {
        let p_begin = mb * panels_per;
        let p_end = (p_begin + panels_per).min(m_panels);
        // SAFETY: each task writes its own rows.
        let outs = unsafe { outp.slice() };
        for r in p_begin * MR..(p_end * MR).min(m) {
            let row = &mut outs[r * p_total + c_begin..r * p_total + c_begin + n];
            let b = bias[r];
            match init {
                Init::Bias => row.fill(b),
                Init::BiasResidual(res) => {
                    let rr = &res[r * p_total + c_begin..r * p_total + c_begin + n];
                    for (y, &x) in row.iter_mut().zip(rr) {
                        *y = x + b;
                    }
                }
                Init::Accumulate => row.iter_mut().for_each(|y| *y += b),
            }
        }
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let block = &packed[k0 * npad..(k0 + kc) * npad];
            for jp in 0..npad / nr {
                let bpanel = &block[jp * kc * nr..(jp + 1) * kc * nr];
                let col = c_begin + jp * nr;
                let cols = nr.min(c_begin + n - col);
                for p in p_begin..p_end {
                    let rows = MR.min(m - p * MR);
                    microkernel(t, kc, rows, w.panel(k0, kc, p), bpanel, &mut outs[p * MR * p_total + col..], p_total, cols);
                }
            }
            k0 += kc;
        }
    });
}

/// Floats of the shared pack buffer a convolution needs when it has few output columns (enough
/// for every kernel).
pub fn shared_pack_len(g: &ConvGeom) -> usize {
    let o = g.out_dims();
    let n = o[0] * o[1] * o[2];
    Kernel::ALL.into_iter().filter(|k| n <= k.nc()).map(|k| g.kdim() * n.div_ceil(k.nr()) * k.nr()).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let o = g.out_dims();
        let v = g.virt();
        let mut y = vec![0f32; g.cout * o[0] * o[1] * o[2]];
        for co in 0..g.cout {
            for od in 0..o[0] {
                for oh in 0..o[1] {
                    for ow in 0..o[2] {
                        let mut acc = b[co] as f64;
                        for ci in 0..g.cin {
                            for kd in 0..g.k {
                                for kh in 0..g.k {
                                    for kw in 0..g.k {
                                        let zd = (od * g.stride + kd) as isize - g.pad as isize;
                                        let zh = (oh * g.stride + kh) as isize - g.pad as isize;
                                        let zw = (ow * g.stride + kw) as isize - g.pad as isize;
                                        if zd < 0 || zh < 0 || zw < 0 || zd >= v[0] as isize || zh >= v[1] as isize || zw >= v[2] as isize {
                                            continue;
                                        }
                                        let (sd, sh, sw) = ((zd >> g.up) as usize, (zh >> g.up) as usize, (zw >> g.up) as usize);
                                        let xi = ((ci * g.din + sd) * g.hin + sh) * g.win + sw;
                                        let wi = (((co * g.cin + ci) * g.k + kd) * g.k + kh) * g.k + kw;
                                        acc += (x[xi] * w[wi]) as f64;
                                    }
                                }
                            }
                        }
                        y[((co * o[0] + od) * o[1] + oh) * o[2] + ow] = acc as f32;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn implicit_gemm_matches_direct_convolution() {
        let pool = Pool::new(2).unwrap();
        let cases = [
            ConvGeom { cin: 5, din: 4, hin: 6, win: 37, up: 0, k: 3, stride: 1, pad: 1, cout: 14 },
            ConvGeom { cin: 3, din: 3, hin: 5, win: 4, up: 1, k: 3, stride: 1, pad: 1, cout: 13 },
            ConvGeom { cin: 2, din: 2, hin: 3, win: 21, up: 1, k: 3, stride: 1, pad: 1, cout: 3 },
            ConvGeom { cin: 3, din: 2, hin: 3, win: 13, up: 1, k: 3, stride: 1, pad: 1, cout: 9 },
            ConvGeom { cin: 2, din: 3, hin: 4, win: 32, up: 0, k: 3, stride: 1, pad: 1, cout: 17 },
            ConvGeom { cin: 4, din: 6, hin: 5, win: 7, up: 0, k: 3, stride: 2, pad: 1, cout: 5 },
            ConvGeom { cin: 40, din: 2, hin: 3, win: 5, up: 0, k: 1, stride: 1, pad: 0, cout: 1 },
        ];
        for g in cases {
            let xs = g.cin * g.din * g.hin * g.win;
            let x: Vec<f32> = (0..xs).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
            let w: Vec<f32> = (0..g.cout * g.kdim()).map(|i| ((i * 7 % 23) as f32 - 11.0) / 20.0).collect();
            let b: Vec<f32> = (0..g.cout).map(|i| i as f32 * 0.1).collect();
            let pa = PackedA::pack(&w, g.cout, g.kdim());
            let o = g.out_dims();
            let mut y = vec![0f32; g.cout * o[0] * o[1] * o[2]];
            let mut ws = vec![0f32; 2 * pack_len()];
            let input = ConvInput { data: &x, z0: 0, planes: g.din };
            let want = naive(&g, &x, &w, &b);
            // Every kernel this CPU runs, without and with the shared pack buffer (few columns).
            for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
                for shared_len in [0, shared_pack_len(&g)] {
                    let mut sh = vec![0f32; shared_len];
                    y.fill(0.0);
                    let (wsp, shp) = (PackWs(ws.as_mut_ptr(), ws.len()), PackWs(sh.as_mut_ptr(), sh.len()));
                    let call = ConvCall { g: &g, bias: &b, input: &input, od0: 0, od1: o[0], win: OutWindow { z0: 0, planes: o[0] }, init: Init::Bias };
                    conv_with(kernel, &pool, &call, &pa, &mut y, ConvScratch { pack: wsp, shared: shp });
                    for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                        assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{kernel} {g:?} shared {shared_len} at {i}: {a} vs {b}");
                    }
                }
            }
        }
    }
}
