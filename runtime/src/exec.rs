//! Executes a planned graph on the CPU: every buffer is a fixed range of one arena, every
//! workspace preallocated, so running performs no heap allocation.

use crate::attention;
use crate::conv::{self, ConvInput, Init, PackWs};
use crate::graph::{Bias, BufId, Graph, InitKind, Op};
use crate::model::Params;
use crate::norm;
use crate::pool::Pool;

/// Preallocated scratch shared by every op.
pub struct Workspaces {
    pub pack: Vec<f32>,
    pub norm: Vec<f32>,
    pub attn: Vec<f32>,
}

impl Workspaces {
    pub fn bytes(&self) -> usize {
        (self.pack.len() + self.norm.len() + self.attn.len()) * 4
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

pub fn run(pool: &Pool, g: &Graph, params: &Params, dynamic: &[Vec<f32>], arena: &mut [f32], ws: &mut Workspaces) {
    assert!(arena.len() >= g.arena_len, "arena smaller than its plan");
    let a = Arena { base: arena.as_mut_ptr(), len: arena.len() };
    let pack = PackWs(ws.pack.as_mut_ptr(), ws.pack.len());
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
                Op::Conv { g: geom, w, bias, x, norm: nrm, staged, slab, out, init } => {
                    let bias: &[f32] = match bias {
                        Bias::Param(i) => &params.vecs[i],
                        Bias::Dynamic(i) => &dynamic[i],
                    };
                    let init = match init {
                        InitKind::Bias => Init::Bias,
                        InitKind::Accumulate => Init::Accumulate,
                        InitKind::Residual(r) => Init::BiasResidual(a.get(g, r)),
                    };
                    let wts = &params.convs[w];
                    let od = geom.out_dims()[0];
                    let op_len = geom.cout * geom.out_dims().iter().product::<usize>();
                    if staged {
                        // In place: copy each slab of input planes (all channels) out, then
                        // overwrite those planes of the first `cout` channels. Later slabs only
                        // read planes that have not been written yet.
                        let plane = geom.hin * geom.win;
                        let xb = a.get_mut(g, x);
                        let mut o0 = 0;
                        while o0 < od {
                            let o1 = (o0 + slab).min(od);
                            let len = (o1 - o0) * plane;
                            for ch in 0..geom.cin {
                                let src = (ch * geom.din + o0) * plane;
                                ws.norm[ch * len..(ch + 1) * len].copy_from_slice(&xb[src..src + len]);
                            }
                            let input = ConvInput { data: &ws.norm[..geom.cin * len], z0: o0, planes: o1 - o0 };
                            conv::conv(pool, &geom, wts, bias, &input, o0, o1, &mut xb[..op_len], init, pack);
                            o0 = o1;
                        }
                        continue;
                    }
                    let xs = a.get(g, x);
                    let o = &mut a.get_mut(g, out)[..op_len];
                    match nrm {
                        None => {
                            let input = ConvInput { data: xs, z0: 0, planes: geom.din };
                            conv::conv(pool, &geom, wts, bias, &input, 0, od, o, init, pack);
                        }
                        Some((stats, act)) => {
                            let ss = a.get(g, stats);
                            let plane = geom.hin * geom.win;
                            let mut o0 = 0;
                            while o0 < od {
                                let o1 = (o0 + slab).min(od);
                                let z0 = o0.saturating_sub(geom.pad);
                                let z1 = (o1 + geom.pad).min(geom.din);
                                let nws = geom.cin * (z1 - z0) * plane;
                                let nbuf = &mut ws.norm[..nws];
                                norm::apply_planes(pool, xs, geom.cin, geom.din, plane, z0, z1, ss, act, nbuf);
                                let input = ConvInput { data: nbuf, z0, planes: z1 - z0 };
                                conv::conv(pool, &geom, wts, bias, &input, o0, o1, o, init, pack);
                                o0 = o1;
                            }
                        }
                    }
                }
            }
        }
    }
}
