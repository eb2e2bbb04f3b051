//! Winograd F(2x2x2, 3x3x3) for the 3x3x3, stride-1, padding-1 convolutions (optionally on a
//! nearest-x2-upsampled input): 64 products per 2x2x2 output tile instead of 216. Weights are
//! transformed once, when the runtime allocates (`G g G^T`, in f64), into 64 packed
//! `[cout, cin]` matrices (27 on an upsampled input); at run time
//! each task takes one B panel of tiles and a block of output rows, transforms the input
//! (`B^T d B`) straight into packed B panels one KC block of channels at a time, accumulates the
//! 64 GEMMs on the selected microkernel, and applies the output transform (`A^T m A`) with the
//! bias and the op's initialisation. Tiles start on even output planes of the whole volume, so
//! slabs compute the same tiles as a full pass; no value depends on how tasks are spread over
//! threads. `LDM_CPU_CONV=direct` turns it off.

use super::{ConvCall, ConvGeom, ConvInput, Init, OutPtr, OutWindow, PackWs};
use crate::gemm::{microkernel, with_tile, Kernel, PackedA, Tile, KC, MR, NR_MAX};
use crate::pool::Pool;

/// Transformed tile positions (4 x 4 x 4).
const XI: usize = 64;
/// Output rows one task handles at most (bounds the per-thread product buffer).
const ROWS_MAX: usize = 16 * MR;

pub use super::mode::{init, ConvMode, CONV_ENV};

/// Whether convolution `g` runs as Winograd (in mode `Winograd`): a fixed rule on its shape.
/// 3x3x3, stride 1, padding 1, at most one x2 upsampling; at least 16 input and output channels
/// (narrower ones spend more on the transforms than they save); at least `MIN_TILES` 2x2x2
/// output tiles (on smaller volumes, e.g. the UNet's deeper levels, B panels are mostly padding
/// and streaming the transformed weights, 64/27 of the direct ones, costs more than the saved
/// products).
pub fn applies(g: &ConvGeom) -> bool {
    let o = g.out_dims();
    let tiles = o.iter().map(|n| n.div_ceil(2)).product::<usize>();
    g.k == 3
        && g.stride == 1
        && g.pad == 1
        && g.up <= 1
        && g.cin >= 16
        && g.cout >= 16
        && tiles >= MIN_TILES
}

/// Fewest output tiles of a Winograd convolution (one AVX-512 B panel; measured break-even
/// with `--example convbench` at 16 and 256 channels).
pub const MIN_TILES: usize = 32;

/// Transformed weights: `u[q]` is the packed `[cout, cin]` matrix of tile position `xis[q]`.
/// On an x2-upsampled input, the two middle columns of each 4-wide patch are equal (both
/// copies of one source voxel), so every transformed input with index 2 along some axis is
/// exactly 0: only the 27 positions without one are kept.
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    pub cout: usize,
    pub cin: usize,
    pub up: u32,
    pub xis: Vec<usize>,
    pub u: Vec<PackedA>,
}

/// The tile positions whose transformed input can be non-zero (see `WinogradWeights`).
fn live_positions(up: u32) -> Vec<usize> {
    (0..XI)
        .filter(|&xi| up == 0 || [xi / 16, (xi / 4) % 4, xi % 4].iter().all(|&i| i != 2))
        .collect()
}

/// `G` of F(2, 3).
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

impl WinogradWeights {
    /// Transforms PyTorch-layout weights `[cout, cin, 3, 3, 3]` (row-major `[cout, cin * 27]`)
    /// of a convolution whose input is upsampled `up` times (0 or 1).
    pub fn new(w: &[f32], cout: usize, cin: usize, up: u32) -> WinogradWeights {
        assert_eq!(w.len(), cout * cin * 27);
        let mut mats = vec![vec![0f32; cout * cin]; XI];
        for co in 0..cout {
            for ci in 0..cin {
                let g = &w[(co * cin + ci) * 27..(co * cin + ci + 1) * 27];
                // Along w, then h, then d.
                let mut t1 = [[[0f64; 4]; 3]; 3];
                for (kd, plane) in t1.iter_mut().enumerate() {
                    for (kh, row) in plane.iter_mut().enumerate() {
                        for (c, v) in row.iter_mut().enumerate() {
                            *v = (0..3)
                                .map(|kw| G[c][kw] * g[kd * 9 + kh * 3 + kw] as f64)
                                .sum();
                        }
                    }
                }
                let mut t2 = [[[0f64; 4]; 4]; 3];
                for kd in 0..3 {
                    for b in 0..4 {
                        for c in 0..4 {
                            t2[kd][b][c] = (0..3).map(|kh| G[b][kh] * t1[kd][kh][c]).sum();
                        }
                    }
                }
                for a in 0..4 {
                    for b in 0..4 {
                        for c in 0..4 {
                            let u: f64 = (0..3).map(|kd| G[a][kd] * t2[kd][b][c]).sum();
                            mats[a * 16 + b * 4 + c][co * cin + ci] = u as f32;
                        }
                    }
                }
            }
        }
        let xis = live_positions(up);
        let u = xis
            .iter()
            .map(|&xi| PackedA::pack(&mats[xi], cout, cin))
            .collect();
        WinogradWeights {
            cout,
            cin,
            up,
            xis,
            u,
        }
    }

    pub fn bytes(&self) -> usize {
        self.u.iter().map(|p| p.bytes()).sum()
    }

    /// `bytes()` of the weights of a `cin -> cout` convolution on an input upsampled `up` times.
    pub fn bytes_for(cout: usize, cin: usize, up: u32) -> usize {
        live_positions(up).len() * cout.div_ceil(MR) * MR * cin * 4
    }
}

/// Per-thread workspace floats of convolution `g`: one transformed input block (64 KC x NR
/// panels) and one product block (64 x rows x NR).
pub fn thread_ws_len(g: &ConvGeom) -> usize {
    let rows = (g.cout.div_ceil(MR) * MR).min(ROWS_MAX);
    XI * NR_MAX * (g.cin.min(KC) + rows)
}

/// Tile grid of output planes `od0..od1`: first tile plane, tile planes, tiles per plane
/// in height and width.
struct Grid {
    tz0: usize,
    tzn: usize,
    th: usize,
    tw: usize,
}

impl Grid {
    fn new(o: [usize; 3], od0: usize, od1: usize) -> Grid {
        let tz0 = od0 / 2;
        Grid {
            tz0,
            tzn: od1.div_ceil(2) - tz0,
            th: o[1].div_ceil(2),
            tw: o[2].div_ceil(2),
        }
    }
    fn tiles(&self) -> usize {
        self.tzn * self.th * self.tw
    }
}

/// A run of lanes whose tiles share one tile row: its first tile, the offsets inside a channel
/// of the 16 input rows its patches read (`NONE`: zero padding), its length and first lane.
#[derive(Clone, Copy)]
struct Seg {
    tz: usize,
    ty: usize,
    tx: usize,
    rows: [usize; 16],
    len: usize,
    lane: usize,
}

/// The tile-row runs of the lanes (tiles) of one B panel.
struct Lanes {
    segs: [Seg; NR_MAX],
    nseg: usize,
}

const NONE: usize = usize::MAX;

impl Lanes {
    fn new(g: &ConvGeom, input: &ConvInput, grid: &Grid, j0: usize, cols: usize) -> Lanes {
        let v = g.virt();
        let empty = Seg {
            tz: 0,
            ty: 0,
            tx: 0,
            rows: [NONE; 16],
            len: 0,
            lane: 0,
        };
        let mut lanes = Lanes {
            segs: [empty; NR_MAX],
            nseg: 0,
        };
        let per_plane = grid.th * grid.tw;
        let in_plane = g.hin * g.win;
        let src = |i: usize, base: usize, n: usize| -> Option<usize> {
            let z = (2 * base + i).checked_sub(1)?;
            (z < n).then_some(z >> g.up)
        };
        let mut l = 0;
        while l < cols {
            let t = j0 + l;
            let (tz, rem) = (grid.tz0 + t / per_plane, t % per_plane);
            let (ty, tx) = (rem / grid.tw, rem % grid.tw);
            let len = (grid.tw - tx).min(cols - l);
            let mut seg = Seg {
                tz,
                ty,
                tx,
                rows: [NONE; 16],
                len,
                lane: l,
            };
            for dz in 0..4 {
                let Some(sz) = src(dz, tz, v[0]) else {
                    continue;
                };
                if sz < input.z0 || sz >= input.z0 + input.planes {
                    continue;
                }
                for dy in 0..4 {
                    let Some(sy) = src(dy, ty, v[1]) else {
                        continue;
                    };
                    seg.rows[dz * 4 + dy] = (sz - input.z0) * in_plane + sy * g.win;
                }
            }
            lanes.segs[lanes.nseg] = seg;
            lanes.nseg += 1;
            l += len;
        }
        lanes
    }
}

type Vector = [f32; NR_MAX];

/// `B^T` of F(2, 3) on four lane vectors.
#[inline(always)]
fn bt_pass(d: [&Vector; 4], out: [&mut Vector; 4]) {
    let [o0, o1, o2, o3] = out;
    for l in 0..NR_MAX {
        o0[l] = d[0][l] - d[2][l];
        o1[l] = d[1][l] + d[2][l];
        o2[l] = d[2][l] - d[1][l];
        o3[l] = d[1][l] - d[3][l];
    }
}

/// `A^T` of F(2, 3) on four lane vectors.
#[inline(always)]
fn at_pass(m: [&Vector; 4], out: [&mut Vector; 2]) {
    let [y0, y1] = out;
    for l in 0..NR_MAX {
        y0[l] = m[0][l] + m[1][l] + m[2][l];
        y1[l] = m[1][l] - m[2][l] - m[3][l];
    }
}

/// Scratch of the transforms (one per task, on the stack).
struct Scratch {
    a: [Vector; XI],
    b: [Vector; XI],
    /// One input row of a run, zero-padded.
    row: [f32; 2 * NR_MAX + 2],
}

/// Transforms channels `c0..c0 + kc` of every lane's input patch into the packed panels `v`
/// (`[q][kc][NR]` for the positions `xis[q]`).
#[allow(clippy::too_many_arguments)]
fn input_transform<T: Tile>(
    g: &ConvGeom,
    input: &ConvInput,
    in_chan: usize,
    lanes: &Lanes,
    xis: &[usize],
    c0: usize,
    kc: usize,
    v: &mut [f32],
    s: &mut Scratch,
) {
    let vw = (g.win << g.up) as isize;
    let up = g.up;
    for ci in c0..c0 + kc {
        let chan = &input.data[ci * in_chan..(ci + 1) * in_chan];
        // Along w, straight from the rows: a[(z, y, x)], index z * 16 + y * 4 + x.
        for sg in &lanes.segs[..lanes.nseg] {
            for (r, &off) in sg.rows.iter().enumerate() {
                let [o0, o1, o2, o3] = pick4(&mut s.a, r * 4, 1);
                let (o0, o1, o2, o3) = (
                    &mut o0[sg.lane..],
                    &mut o1[sg.lane..],
                    &mut o2[sg.lane..],
                    &mut o3[sg.lane..],
                );
                if off == NONE {
                    for t in 0..sg.len {
                        (o0[t], o1[t], o2[t], o3[t]) = (0.0, 0.0, 0.0, 0.0);
                    }
                    continue;
                }
                let row = &chan[off..off + g.win];
                if up == 0 {
                    // p[i]: virtual w = 2 tx - 1 + i.
                    let n = 2 * sg.len + 2;
                    let x0 = 2 * sg.tx as isize - 1;
                    let lo = ((-x0).max(0) as usize).min(n);
                    let hi = ((vw - x0).max(0) as usize).clamp(lo, n);
                    let at = (x0 + lo as isize).max(0) as usize;
                    let p = &mut s.row[..n];
                    p[..lo].fill(0.0);
                    p[lo..hi].copy_from_slice(&row[at..at + hi - lo]);
                    p[hi..].fill(0.0);
                    for t in 0..sg.len {
                        let (d0, d1, d2, d3) = (p[2 * t], p[2 * t + 1], p[2 * t + 2], p[2 * t + 3]);
                        o0[t] = d0 - d2;
                        o1[t] = d1 + d2;
                        o2[t] = d2 - d1;
                        o3[t] = d1 - d3;
                    }
                } else {
                    // Upsampled: the patch of tile tx + t is q[t], q[t + 1], q[t + 1], q[t + 2]
                    // with q[j] the source voxel tx - 1 + j (0 outside the row).
                    let n = sg.len + 2;
                    let x0 = sg.tx as isize - 1;
                    let lo = ((-x0).max(0) as usize).min(n);
                    let hi = ((g.win as isize - x0).max(0) as usize).clamp(lo, n);
                    let at = (x0 + lo as isize).max(0) as usize;
                    let q = &mut s.row[..n];
                    q[..lo].fill(0.0);
                    q[lo..hi].copy_from_slice(&row[at..at + hi - lo]);
                    q[hi..].fill(0.0);
                    for t in 0..sg.len {
                        let (d0, d1, d3) = (q[t], q[t + 1], q[t + 2]);
                        o0[t] = d0 - d1;
                        o1[t] = d1 + d1;
                        o2[t] = 0.0;
                        o3[t] = d1 - d3;
                    }
                }
            }
        }
        // Along h (a -> b), then d (b -> a).
        for z in 0..4 {
            for x in 0..4 {
                let d = |y: usize| &s.a[z * 16 + y * 4 + x];
                let [o0, o1, o2, o3] = pick4(&mut s.b, z * 16 + x, 4);
                bt_pass([d(0), d(1), d(2), d(3)], [o0, o1, o2, o3]);
            }
        }
        for yx in 0..16 {
            let d = |z: usize| &s.b[z * 16 + yx];
            let [o0, o1, o2, o3] = pick4(&mut s.a, yx, 16);
            bt_pass([d(0), d(1), d(2), d(3)], [o0, o1, o2, o3]);
        }
        let kk = ci - c0;
        for (q, &xi) in xis.iter().enumerate() {
            let at = (q * kc + kk) * T::NR;
            v[at..at + T::NR].copy_from_slice(&s.a[xi][..T::NR]);
        }
    }
}

/// Mutable references to `a[first + i * stride]` for `i` in 0..4.
fn pick4(a: &mut [Vector; XI], first: usize, stride: usize) -> [&mut Vector; 4] {
    let mut it = a.iter_mut().skip(first).step_by(stride);
    let mut next = || it.next().expect("index inside the tile");
    [next(), next(), next(), next()]
}

/// `dst[x] = f(x, dst[x], value x)` for the run's interleaved outputs: `y0[t]` at `2t`, `y1[t]`
/// at `2t + 1`.
#[inline(always)]
fn store(dst: &mut [f32], y0: &[f32], y1: &[f32], f: impl Fn(usize, f32, f32) -> f32) {
    let t = dst.len() / 2;
    let mut pairs = dst.chunks_exact_mut(2);
    for (t, d) in (&mut pairs).enumerate() {
        d[0] = f(2 * t, d[0], y0[t]);
        d[1] = f(2 * t + 1, d[1], y1[t]);
    }
    if let Some(d) = pairs.into_remainder().first_mut() {
        *d = f(2 * t, *d, y0[t]);
    }
}

/// Where one task's output goes: output dims, the planes it writes and the window they are in.
struct OutGeom {
    o: [usize; 3],
    od0: usize,
    od1: usize,
    win: OutWindow,
}

/// Output transform of rows `r0..r1` (products in `m`, `[xi][rows_pad][NR]`), combined with the
/// bias and `init` into `out`.
#[allow(clippy::too_many_arguments)]
fn output_transform<T: Tile>(
    lanes: &Lanes,
    og: &OutGeom,
    r0: usize,
    r1: usize,
    rows_pad: usize,
    m: &[f32],
    bias: &[f32],
    init: Init,
    out: &mut [f32],
    s: &mut Scratch,
) {
    let [_, ho, wo] = og.o;
    let plane = ho * wo;
    let row_len = og.win.planes * plane;
    for r in r0..r1 {
        for (xi, d) in s.a.iter_mut().enumerate() {
            let at = (xi * rows_pad + r - r0) * T::NR;
            d[..T::NR].copy_from_slice(&m[at..at + T::NR]);
        }
        // Along d: a[(z, y, x)] -> b[(i, y, x)], i < 2.
        for yx in 0..16 {
            let d = |z: usize| &s.a[z * 16 + yx];
            let mut it = s.b.iter_mut().skip(yx).step_by(16);
            let (y0, y1) = (it.next().expect("row 0"), it.next().expect("row 1"));
            at_pass([d(0), d(1), d(2), d(3)], [y0, y1]);
        }
        // Along h: b[(i, y, x)] -> a[(i, j, x)], j < 2.
        for i in 0..2 {
            for x in 0..4 {
                let d = |y: usize| &s.b[i * 16 + y * 4 + x];
                let mut it = s.a.iter_mut().skip(i * 16 + x).step_by(4);
                let (y0, y1) = (it.next().expect("row 0"), it.next().expect("row 1"));
                at_pass([d(0), d(1), d(2), d(3)], [y0, y1]);
            }
        }
        // Along w: a[(i, j, x)] -> b[(i, j, k)] at b[(i * 2 + j) * 2 + k].
        for i in 0..2 {
            for j in 0..2 {
                let base = i * 16 + j * 4;
                let (lo, hi) = s.b.split_at_mut((i * 2 + j) * 2 + 1);
                let d = &s.a[base..base + 4];
                at_pass(
                    [&d[0], &d[1], &d[2], &d[3]],
                    [&mut lo[(i * 2 + j) * 2], &mut hi[0]],
                );
            }
        }
        let b = bias[r];
        let row = &mut out[r * row_len..(r + 1) * row_len];
        let res = match init {
            Init::BiasResidual(res) => &res[r * row_len..(r + 1) * row_len],
            _ => &[][..],
        };
        for sg in &lanes.segs[..lanes.nseg] {
            // Output voxels of the run along w (the last tile may stick out by one).
            let n = (2 * sg.len).min(wo - 2 * sg.tx);
            for i in 0..2 {
                let oz = 2 * sg.tz + i;
                if oz < og.od0 || oz >= og.od1 {
                    continue;
                }
                for j in 0..2 {
                    let oy = 2 * sg.ty + j;
                    if oy >= ho {
                        continue;
                    }
                    let at = (oz - og.win.z0) * plane + oy * wo + 2 * sg.tx;
                    let dst = &mut row[at..at + n];
                    let (y0, y1) = (
                        &s.b[(i * 2 + j) * 2][sg.lane..],
                        &s.b[(i * 2 + j) * 2 + 1][sg.lane..],
                    );
                    match init {
                        Init::Bias => store(dst, y0, y1, |_, _, y| b + y),
                        Init::BiasResidual(_) => store(dst, y0, y1, |x, _, y| res[at + x] + b + y),
                        Init::Accumulate => store(dst, y0, y1, |_, d, y| d + b + y),
                    }
                }
            }
        }
    }
}

/// The call `c` as a Winograd convolution (see `super::conv`); `ws` holds `thread_ws_len(c.g)`
/// floats per thread.
pub fn conv(pool: &Pool, c: &ConvCall, w: &WinogradWeights, out: &mut [f32], ws: PackWs) {
    conv_with(crate::gemm::selected(), pool, c, w, out, ws)
}

/// `conv` on microkernel `kernel` (the portable one where the CPU lacks it).
pub fn conv_with(kernel: Kernel, pool: &Pool, c: &ConvCall, w: &WinogradWeights, out: &mut [f32], ws: PackWs) {
    with_tile!(kernel, t => conv_tiled(t, pool, c, w, out, ws))
}

fn conv_tiled<T: Tile>(t: T, pool: &Pool, c: &ConvCall, w: &WinogradWeights, out: &mut [f32], ws: PackWs) {
    let ConvCall { g, bias, input, od0, od1, win, init } = *c;
    assert!(
        applies(g) && w.cin == g.cin && w.cout == g.cout && w.up == g.up,
        "not this convolution's Winograd weights"
    );
    if od1 <= od0 {
        return;
    }
    let o = g.out_dims();
    debug_assert!(od0 >= win.z0 && od1 <= win.z0 + win.planes);
    debug_assert!(out.len() >= g.cout * win.planes * o[1] * o[2]);
    let per_thread = thread_ws_len(g);
    debug_assert!(ws.1 >= pool.threads() * per_thread);
    let nr = T::NR;
    let grid = Grid::new(o, od0, od1);
    let n_blocks = grid.tiles().div_ceil(nr);
    let m_panels = g.cout.div_ceil(MR);
    let want = 4 * pool.threads();
    let min_split = m_panels.div_ceil(ROWS_MAX / MR);
    let m_split = if n_blocks >= want {
        1
    } else {
        (want / n_blocks).clamp(1, m_panels)
    }
    .max(min_split);
    let panels_per = m_panels.div_ceil(m_split);
    let m_blocks = m_panels.div_ceil(panels_per);
    let (cin, cout) = (g.cin, g.cout);
    let outp = OutPtr(out.as_mut_ptr(), out.len());
    let og = OutGeom { o, od0, od1, win };
    let in_chan = input.planes * g.hin * g.win;
    let work = cout * cin * grid.tiles() * XI;
    pool.for_each_sized(n_blocks * m_blocks, work, &|task, tid| {
        let (nb, mb) = (task / m_blocks, task % m_blocks);
        let j0 = nb * nr;
        let cols = nr.min(grid.tiles() - j0);
        let lanes = Lanes::new(g, input, &grid, j0, cols);
        let p0 = mb * panels_per;
        let p1 = (p0 + panels_per).min(m_panels);
        let (r0, r1) = (p0 * MR, (p1 * MR).min(cout));
        let rows_pad = (p1 - p0) * MR;
        // SAFETY: each thread owns its workspace slice; tasks write disjoint (rows, tiles).
        let wsl = unsafe { ws.thread_slice(tid, per_thread) };
        let (v, m) = wsl.split_at_mut(XI * NR_MAX * cin.min(KC));
        let m = &mut m[..XI * rows_pad * nr];
        m.fill(0.0);
        let mut scratch = Scratch {
            a: [[0.0; NR_MAX]; XI],
            b: [[0.0; NR_MAX]; XI],
            row: [0.0; 2 * NR_MAX + 2],
        };
        let mut k0 = 0;
        while k0 < cin {
            let kc = KC.min(cin - k0);
            let v = &mut v[..XI * kc * nr];
            input_transform::<T>(g, input, in_chan, &lanes, &w.xis, k0, kc, v, &mut scratch);
            for (q, (&xi, u)) in w.xis.iter().zip(&w.u).enumerate() {
                let bpanel = &v[q * kc * nr..(q + 1) * kc * nr];
                for p in p0..p1 {
                    let rows = MR.min(cout - p * MR);
                    let c = &mut m[(xi * rows_pad + (p - p0) * MR) * nr..];
                    microkernel(t, kc, rows, u.panel(k0, kc, p), bpanel, c, nr, cols);
                }
            }
            k0 += kc;
        }
        // SAFETY: see above.
        let outs = unsafe { outp.slice() };
        output_transform::<T>(
            &lanes,
            &og,
            r0,
            r1,
            rows_pad,
            m,
            bias,
            init,
            outs,
            &mut scratch,
        );
    });
}

#[cfg(test)]
mod tests;
