//! Executes a planned graph on the CPU with its lowered weights (`lower_cpu`): every buffer is a
//! fixed range of one arena, every workspace preallocated, so running performs no heap allocation.

use crate::attention;
use crate::conv::{self, ConvCall, ConvGeom, ConvInput, ConvScratch, ConvWeights, Init, OutWindow, PackWs};
use crate::graph::{Bias, BufId, Graph, InitKind, Op};
use crate::lower_cpu::{slab_planes, CpuParams};
use crate::norm;
use crate::pool::Pool;

/// Preallocated scratch shared by every op.
pub struct Workspaces {
    pub pack: Vec<f32>,
    /// One im2col matrix of a convolution with few output columns (see `conv::conv_shared`).
    pub shared: Vec<f32>,
    /// Normalised (or staged) input planes of one slab; a slab's input planes fit in
    /// `slab_bytes` (`lower_cpu::slab_planes`).
    pub norm: Vec<f32>,
    pub slab_bytes: usize,
    pub attn: Vec<f32>,
}

impl Workspaces {
    /// The convolutions' view of the pack and shared buffers.
    pub fn conv_scratch(&mut self) -> ConvScratch {
        ConvScratch { pack: PackWs(self.pack.as_mut_ptr(), self.pack.len()), shared: PackWs(self.shared.as_mut_ptr(), self.shared.len()) }
    }

    pub fn bytes(&self) -> usize {
        (self.pack.len() + self.shared.len() + self.norm.len() + self.attn.len()) * 4
    }
}

struct Arena {
    base: *mut f32,
    len: usize,
}

impl Arena {
    /// SAFETY: the plan guarantees that buffers live at the same time do not overlap, and an op
    /// never takes the same buffer as input and output.
    unsafe fn get(&self, g: &Graph, b: BufId) -> &[f32] {
        let i = &g.bufs[b];
        debug_assert!(i.offset + i.len <= self.len);
        std::slice::from_raw_parts(self.base.add(i.offset), i.len)
    }
    #[allow(clippy::mut_from_ref)]
    unsafe fn get_mut(&self, g: &Graph, b: BufId) -> &mut [f32] {
        let i = &g.bufs[b];
        debug_assert!(i.offset + i.len <= self.len);
        std::slice::from_raw_parts_mut(self.base.add(i.offset), i.len)
    }
}

/// The arena slice of buffer `b`.
pub fn buffer<'a>(g: &Graph, arena: &'a mut [f32], b: BufId) -> &'a mut [f32] {
    let i = &g.bufs[b];
    &mut arena[i.offset..i.offset + i.len]
}

pub fn run(pool: &Pool, g: &Graph, params: &CpuParams, dynamic: &[Vec<f32>], arena: &mut [f32], ws: &mut Workspaces) {
    assert!(arena.len() >= g.arena_len, "arena smaller than its plan");
    let a = Arena { base: arena.as_mut_ptr(), len: arena.len() };
    let scratch = ws.conv_scratch();
    for op in &g.ops {
        // SAFETY: see `Arena::get`.
        unsafe {
            match *op {
                Op::Stats { x, c, p, groups, eps, gamma, beta, out } => {
                    norm::gn_stats(pool, a.get(g, x), c, p, groups, eps, &params.vecs[gamma], &params.vecs[beta], a.get_mut(g, out));
                }
                Op::Concat { a: x, b: y, out } => {
                    let (xs, ys) = (a.get(g, x), a.get(g, y));
                    let o = a.get_mut(g, out);
                    o[..xs.len()].copy_from_slice(xs);
                    o[xs.len()..].copy_from_slice(ys);
                }
                Op::Attn { qkv, res, c, n, dh, out } => {
                    let r = res.map(|r| a.get(g, r));
                    attention::attention(pool, a.get(g, qkv), r, c, n, dh, a.get_mut(g, out), &mut ws.attn);
                }
                Op::Conv { g: geom, w, bias, x, norm: nrm, out, init } => {
                    let bias: &[f32] = match bias {
                        Bias::Param(i) => &params.vecs[i],
                        Bias::Dynamic(i) => &dynamic[i],
                    };
                    let init = match init {
                        InitKind::Bias => Init::Bias,
                        InitKind::Accumulate => Init::Accumulate,
                        InitKind::Residual(r) => Init::BiasResidual(a.get(g, r)),
                    };
                    let od = geom.out_dims()[0];
                    let win = OutWindow { z0: 0, planes: od };
                    let xin = if op.in_place() { None } else { Some(View { data: a.get(g, x), z0: 0, planes: geom.din }) };
                    let nrm = nrm.map(|(s, act)| (a.get(g, s), act));
                    let o = a.get_mut(g, out);
                    let conv = ConvOp { geom: &geom, weights: &params.convs[w], bias, x: xin, norm: nrm, slab: slab_planes(&geom, ws.slab_bytes), win, o0: 0, o1: od, init };
                    conv_op(pool, &conv, o, &mut ws.norm, scratch);
                }
            }
        }
    }
}

/// Planes `z0 .. z0 + planes` of a `[c, planes, H, W]` volume window.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub z0: usize,
    pub planes: usize,
}

/// One convolution op of the graph over output planes `o0..o1` (inside the window `win` of the
/// output slice). `x == None` means staged in place: the input is the output itself (1x1,
/// narrowing), copied out slab by slab first. With `norm` (scale/shift, SiLU), input planes are
/// normalised (+SiLU) into the norm workspace per slab of `slab` output planes.
#[derive(Clone, Copy)]
pub struct ConvOp<'a> {
    pub geom: &'a ConvGeom,
    pub weights: &'a ConvWeights,
    pub bias: &'a [f32],
    pub x: Option<View<'a>>,
    pub norm: Option<(&'a [f32], bool)>,
    pub slab: usize,
    pub win: OutWindow,
    pub o0: usize,
    pub o1: usize,
    pub init: Init<'a>,
}

impl<'a> ConvOp<'a> {
    /// The convolution call of output planes `od0..od1` from `input`.
    fn call<'b>(&'b self, input: &'b ConvInput<'b>, od0: usize, od1: usize) -> ConvCall<'b> {
        ConvCall { g: self.geom, bias: self.bias, input, od0, od1, win: self.win, init: self.init }
    }
}

/// Runs `op` into `out`, with `norm_ws` for normalised or staged input planes and `scratch` for
/// the convolution itself.
pub fn conv_op(pool: &Pool, op: &ConvOp, out: &mut [f32], norm_ws: &mut [f32], scratch: ConvScratch) {
    let ConvOp { geom, weights: wts, x, norm, slab, win, o0, o1, .. } = *op;
    let plane = geom.hin * geom.win;
    let op_len = geom.cout * win.planes * geom.out_dims()[1] * geom.out_dims()[2];
    match (x, norm) {
        (None, _) => {
            // In place: later slabs only read planes that have not been written yet.
            let mut s0 = o0;
            while s0 < o1 {
                let s1 = (s0 + slab).min(o1);
                let len = (s1 - s0) * plane;
                for ch in 0..geom.cin {
                    let src = (ch * win.planes + s0 - win.z0) * plane;
                    norm_ws[ch * len..(ch + 1) * len].copy_from_slice(&out[src..src + len]);
                }
                let input = ConvInput { data: &norm_ws[..geom.cin * len], z0: s0, planes: s1 - s0 };
                conv::conv_any(pool, &op.call(&input, s0, s1), wts, &mut out[..op_len], scratch);
                s0 = s1;
            }
        }
        (Some(xv), None) => {
            let input = ConvInput { data: xv.data, z0: xv.z0, planes: xv.planes };
            conv::conv_any(pool, &op.call(&input, o0, o1), wts, &mut out[..op_len], scratch);
        }
        (Some(xv), Some((ss, act))) => {
            let mut s0 = o0;
            while s0 < o1 {
                let s1 = (s0 + slab).min(o1);
                let z0 = s0.saturating_sub(geom.pad);
                let z1 = (s1 + geom.pad).min(geom.din);
                let nws = geom.cin * (z1 - z0) * plane;
                let nbuf = &mut norm_ws[..nws];
                norm::apply_planes(pool, xv.data, geom.cin, xv.planes, plane, z0 - xv.z0, z1 - xv.z0, ss, act, nbuf);
                let input = ConvInput { data: nbuf, z0, planes: z1 - z0 };
                conv::conv_any(pool, &op.call(&input, s0, s1), wts, &mut out[..op_len], scratch);
                s0 = s1;
            }
        }
    }
}
