//! 3-D convolution as an implicit GEMM: output `[Cout, P]` = packed weights `[Cout, Cin*k^3]` x
//! a virtual im2col matrix that is never materialised; each `KC x NC` block of it is packed straight
//! from the input volume (optionally nearest-x2-upsampled on the fly). Tasks split the output into
//! (column block, row block) tiles, so results do not depend on the thread count. The B panel
//! width and block width follow the selected microkernel (`gemm::Kernel`). Large 3x3x3
//! convolutions run as Winograd F(2x2x2, 3x3x3) instead (`winograd`, chosen per layer at load;
//! `ConvWeights` says which, `conv_any` dispatches).

#[cfg(target_arch = "x86_64")]
mod pack_avx2;
#[cfg(target_arch = "x86_64")]
mod pack_avx512;
// LDM_CPU_CONV: the algorithm of the 3x3x3 convolutions
pub mod mode;
pub mod winograd;

#[cfg(target_arch = "x86_64")]
use crate::gemm::{Avx2, Avx512};
#[cfg(target_arch = "aarch64")]
use crate::gemm::Neon;
use crate::gemm::{microkernel, with_tile, Kernel, PackedA, Portable, Tile, KC, MR, NC_MAX};
use crate::pool::Pool;

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

/// The im2col packing of a tile: `NR`-wide panels, with the kernel's instruction set.
trait PackB: Tile {
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
