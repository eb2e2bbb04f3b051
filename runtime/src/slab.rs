//! Bounded-memory decoding that equals the full decode: the decoder's op list is cut at `t0`;
//! the prefix runs on whole (small, low-resolution) volumes, the tail in depth slabs whose
//! input ranges grow by each convolution's halo. GroupNorm statistics stay global: pass `j`
//! recomputes the tail slab by slab up to GroupNorm `j` and accumulates its sums over each
//! slab's own planes; the last pass produces the output. Every range, window and offset is
//! planned here, so running allocates nothing.

use crate::conv::{ConvGeom, Init, OutWindow};
use crate::error::RuntimeError;
use crate::exec::{conv_op, ConvOp, View, Workspaces};
use crate::graph::{Bias, BufId, Graph, InitKind, Op};
use crate::lower_cpu::{slab_planes, CpuParams};
use crate::norm;
use crate::pool::Pool;

type Range = Option<(usize, usize)>;

fn hull(a: Range, b: (usize, usize)) -> Range {
    Some(match a {
        None => b,
        Some((x, y)) => (x.min(b.0), y.max(b.1)),
    })
}

/// Input planes a stride-1 convolution reads for output planes `o0..o1`.
fn input_range(g: &ConvGeom, o0: usize, o1: usize) -> (usize, usize) {
    let vd = g.din << g.up;
    let vlo = o0.saturating_sub(g.pad);
    let vhi = (o1 - 1 + g.pad).min(vd - 1);
    (vlo >> g.up, (vhi >> g.up) + 1)
}

/// Ranges of one slab in one pass.
#[derive(Debug, Clone)]
struct SlabRanges {
    /// Output planes this slab owns.
    core: (usize, usize),
    /// Output planes each tail op computes (None: not run).
    op_range: Vec<Range>,
    /// Planes each buffer holds in this slab (its window).
    window: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
struct Pass {
    /// Tail op index of the GroupNorm statistics this pass gathers; None = final pass.
    target: Option<usize>,
    slabs: Vec<SlabRanges>,
}

/// Per-buffer shape facts gathered from the ops.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    chans: usize,
    depth: usize,
    plane: usize,
}

#[derive(Debug)]
pub struct SlabPlan {
    t0: usize,
    prefix: Graph,
    tail: Graph,
    local: Vec<bool>,
    meta: Vec<Meta>,
    passes: Vec<Pass>,
    /// For tail Stats outputs: offset of their scale/shift in `stats` (floats).
    stats_at: Vec<Option<usize>>,
    stats_len: usize,
    out_buf: BufId,
    out_depth: usize,
    /// Depth of one slab in output planes.
    pub slab: usize,
    pub slabs: usize,
    pub passes_count: usize,
}

impl SlabPlan {
    /// Arena floats: prefix volumes, then the tail's slab windows.
    pub fn arena_len(&self) -> usize {
        self.prefix.arena_len + self.tail.arena_len
    }
    /// Floats of the persistent statistics store.
    pub fn stats_len(&self) -> usize {
        self.stats_len
    }
    /// Floats of f64 moment accumulators.
    pub fn moments_len(&self) -> usize {
        self.stats_len
    }

    /// Plans a slab decode of `g` (the decoder graph) cut at op `t0` with slabs of `slab`
    /// output planes. Fails when the cut is not supported.
    pub fn new(g: &Graph, out_buf: BufId, t0: usize, slab: usize) -> Result<SlabPlan, RuntimeError> {
        let nb = g.bufs.len();
        let mut meta = vec![Meta::default(); nb];
        for op in &g.ops {
            if let Op::Conv { g: geom, x, out, .. } = *op {
                let o = geom.out_dims();
                let mx = &mut meta[x];
                mx.chans = mx.chans.max(geom.cin);
                mx.depth = geom.din;
                mx.plane = geom.hin * geom.win;
                let mo = &mut meta[out];
                mo.chans = mo.chans.max(geom.cout);
                mo.depth = o[0];
                mo.plane = o[1] * o[2];
            }
        }
        let tail_ops: Vec<Op> = g.ops[t0..].to_vec();
        let mut local = vec![false; nb];
        let mut stats_out = vec![false; nb];
        for op in &tail_ops {
            match *op {
                Op::Conv { g: geom, out, init, .. } => {
                    if geom.stride != 1 {
                        return Err(RuntimeError::InvalidConfig("slab decoding needs stride-1 convolutions".into()));
                    }
                    if matches!(init, InitKind::Residual(_)) {
                        return Err(RuntimeError::InvalidConfig("slab decoding does not support residual inputs".into()));
                    }
                    local[out] = true;
                }
                Op::Stats { out, .. } => stats_out[out] = true,
                _ => return Err(RuntimeError::InvalidConfig("slab decoding supports convolutions and GroupNorm only".into())),
            }
        }
        // Tail Stats must read tail-produced volumes.
        for op in &tail_ops {
            if let Op::Stats { x, .. } = *op {
                if !local[x] {
                    return Err(RuntimeError::InvalidConfig("slab cut splits a GroupNorm from its input".into()));
                }
            }
        }
        let out_depth = meta[out_buf].depth;
        let up_in_tail = tail_ops.iter().filter(|o| matches!(o, Op::Conv { g, .. } if g.up > 0)).count();
        let align = 1usize << up_in_tail;
        if slab == 0 || !slab.is_multiple_of(align) || !out_depth.is_multiple_of(align) {
            return Err(RuntimeError::InvalidConfig(format!("slab {slab} must be a multiple of {align}")));
        }
        let level = |b: BufId| -> usize {
            // Output depth / buffer depth = 2^k.
            (out_depth / meta[b].depth.max(1)).trailing_zeros() as usize
        };
        let cores: Vec<(usize, usize)> = (0..out_depth).step_by(slab).map(|a| (a, (a + slab).min(out_depth))).collect();
        let stats_ops: Vec<usize> = tail_ops.iter().enumerate().filter(|(_, o)| matches!(o, Op::Stats { .. })).map(|(i, _)| i).collect();
        let mut passes = Vec::new();
        for target in stats_ops.iter().map(|&i| Some(i)).chain(std::iter::once(None)) {
            let last = target.unwrap_or(tail_ops.len());
            let mut slabs = Vec::new();
            for &(a, b) in &cores {
                let mut need: Vec<Range> = vec![None; nb];
                let sink = match target.map(|j| &tail_ops[j]) {
                    Some(Op::Stats { x, .. }) => *x,
                    Some(_) => return Err(RuntimeError::InvalidConfig("slab pass target is not a GroupNorm".into())),
                    None => out_buf,
                };
                let k = level(sink);
                let core_sink = (a >> k, b >> k);
                need[sink] = Some(core_sink);
                let mut op_range: Vec<Range> = vec![None; tail_ops.len()];
                for i in (0..last).rev() {
                    if let Op::Conv { g: geom, x, out, init, .. } = tail_ops[i] {
                        let Some(r) = need[out] else { continue };
                        op_range[i] = Some(r);
                        if matches!(init, InitKind::Bias) {
                            need[out] = None;
                        }
                        if local[x] {
                            need[x] = hull(need[x], input_range(&geom, r.0, r.1));
                        }
                    }
                }
                // Windows: hull of everything touching each buffer.
                let mut win: Vec<Range> = vec![None; nb];
                win[sink] = Some(core_sink);
                for i in 0..last {
                    if let (Op::Conv { g: geom, x, out, .. }, Some(r)) = (&tail_ops[i], op_range[i]) {
                        win[*out] = hull(win[*out], r);
                        if local[*x] {
                            win[*x] = hull(win[*x], input_range(geom, r.0, r.1));
                        }
                    }
                }
                let window = win.iter().map(|w| w.unwrap_or((0, 0))).collect();
                slabs.push(SlabRanges { core: (a, b), op_range, window });
            }
            passes.push(Pass { target, slabs });
        }
        // Buffer capacities: channels x the widest window x plane.
        let mut cap = vec![0usize; nb];
        for p in &passes {
            for s in &p.slabs {
                for b in 0..nb {
                    if local[b] {
                        let planes = s.window[b].1 - s.window[b].0;
                        cap[b] = cap[b].max(meta[b].chans * planes * meta[b].plane);
                    }
                }
            }
        }
        let mut tail = Graph { ops: tail_ops, ..Graph::default() };
        for b in 0..nb {
            tail.bufs.push(crate::graph::BufInfo { len: if local[b] { cap[b] } else { 0 }, offset: 0, first: usize::MAX, last: 0 });
        }
        tail.plan()?;
        let mut prefix = Graph { ops: g.ops[..t0].to_vec(), inputs: g.inputs.clone(), ..Graph::default() };
        let mut used = vec![false; nb];
        for b in g.inputs.iter() {
            used[*b] = true;
        }
        for op in &prefix.ops {
            for b in op.touches() {
                used[b] = true;
            }
        }
        for b in 0..nb {
            prefix.bufs.push(crate::graph::BufInfo { len: if used[b] && !local[b] { g.bufs[b].len } else { 0 }, offset: 0, first: usize::MAX, last: 0 });
            if used[b] && !local[b] {
                prefix.outputs.push(b);
            }
        }
        prefix.plan()?;
        let mut stats_at = vec![None; nb];
        let mut stats_len = 0;
        for b in 0..nb {
            if stats_out[b] {
                stats_at[b] = Some(stats_len);
                stats_len += g.bufs[b].len;
            }
        }
        let passes_count = passes.len();
        Ok(SlabPlan { t0, prefix, tail, local, meta, passes, stats_at, stats_len, out_buf, out_depth, slab, slabs: cores.len(), passes_count })
    }

    /// Chooses the cheapest cut and slab depth whose arena fits `budget` floats (given the
    /// rest of the memory), trying late cuts and thick slabs first.
    pub fn choose(g: &Graph, out_buf: BufId, budget: usize) -> Result<SlabPlan, RuntimeError> {
        let mut cuts: Vec<usize> = g.ops.iter().enumerate().filter(|(_, o)| matches!(o, Op::Conv { g, .. } if g.up > 0)).map(|(i, _)| i).collect();
        cuts.push(0);
        cuts.dedup();
        let mut best_err = None;
        // Late cuts first (less recomputation), then thick slabs first.
        let mut order = cuts.clone();
        order.sort_unstable_by(|a, b| b.cmp(a));
        for t0 in order {
            let ups = g.ops[t0..].iter().filter(|o| matches!(o, Op::Conv { g, .. } if g.up > 0)).count();
            let align = 1usize << ups;
            let depth = g
                .ops
                .iter()
                .find_map(|o| match o {
                    Op::Conv { g, out, .. } if *out == out_buf => Some(g.out_dims()[0]),
                    _ => None,
                })
                .ok_or_else(|| RuntimeError::InvalidConfig("decoder output is not a convolution".into()))?;
            let mut slab = (depth / 2).div_ceil(align) * align;
            while slab >= align {
                match SlabPlan::new(g, out_buf, t0, slab) {
                    Ok(p) if p.arena_len() + 2 * p.stats_len <= budget => return Ok(p),
                    Ok(_) => {}
                    Err(e) => best_err = Some(e),
                }
                if slab == align {
                    break;
                }
                slab = ((slab / 2).div_ceil(align) * align).max(align);
            }
        }
        Err(best_err.unwrap_or(RuntimeError::MemoryLimit { needed: 0, limit: budget * 4 }))
    }

    /// Runs the decoder graph `g` in slabs; `arena` holds at least `arena_len()` floats,
    /// `stats` `stats_len()` floats, `moments` `moments_len()` f64s. The input volume must
    /// already be in the prefix arena's input buffer. Writes the whole output to `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn run(&self, pool: &Pool, params: &CpuParams, arena: &mut [f32], stats: &mut [f32], moments: &mut [f64], ws: &mut Workspaces, out: &mut [f32]) {
        crate::exec::run(pool, &self.prefix, params, &[], &mut arena[..self.prefix.arena_len], ws);
        let (pre, tail_arena) = arena.split_at_mut(self.prefix.arena_len);
        let scratch = ws.conv_scratch();
        let base = tail_arena.as_mut_ptr();
        let pre_base = pre.as_ptr();
        for pass in &self.passes {
            if let Some(j) = pass.target {
                if let Op::Stats { groups, .. } = self.tail.ops[j] {
                    moments[..2 * groups].fill(0.0);
                }
            }
            for s in &pass.slabs {
                for (i, op) in self.tail.ops.iter().enumerate() {
                    let Some((o0, o1)) = s.op_range[i] else { continue };
                    let Op::Conv { g: geom, w, bias, x, norm: nrm, out, init } = *op else { continue };
                    // SAFETY: tail buffers are disjoint while live (planned); prefix buffers
                    // and the stats store are only read here.
                    unsafe {
                        let view = |b: BufId| -> View {
                            if self.local[b] {
                                let (w0, w1) = s.window[b];
                                let info = &self.tail.bufs[b];
                                View { data: std::slice::from_raw_parts(base.add(info.offset), info.len), z0: w0, planes: w1 - w0 }
                            } else {
                                let info = &self.prefix.bufs[b];
                                View { data: std::slice::from_raw_parts(pre_base.add(info.offset), info.len), z0: 0, planes: self.meta[b].depth }
                            }
                        };
                        let bias: &[f32] = match bias {
                            Bias::Param(i) => &params.vecs[i],
                            Bias::Dynamic(_) => &[],
                        };
                        let init = match init {
                            InitKind::Bias => Init::Bias,
                            _ => Init::Accumulate,
                        };
                        let nrm = nrm.map(|(sb, act)| {
                            let ss: &[f32] = match self.stats_at[sb] {
                                Some(at) => std::slice::from_raw_parts(stats.as_ptr().add(at), 2 * geom.cin),
                                None => view(sb).data,
                            };
                            (ss, act)
                        });
                        let xin = if op.in_place() { None } else { Some(view(x)) };

                        let (w0, w1) = s.window[out];
                        let oinfo = &self.tail.bufs[out];
                        let o = std::slice::from_raw_parts_mut(base.add(oinfo.offset), oinfo.len);
                        let conv = ConvOp {
                            geom: &geom,
                            weights: &params.convs[w],
                            bias,
                            x: xin,
                            norm: nrm,
                            slab: slab_planes(&geom, ws.slab_bytes),
                            win: OutWindow { z0: w0, planes: w1 - w0 },
                            o0,
                            o1,
                            init,
                        };
                        conv_op(pool, &conv, o, &mut ws.norm, scratch);
                    }
                }
                match pass.target {
                    Some(j) => {
                        let Op::Stats { x, c, groups, .. } = self.tail.ops[j] else { continue };
                        let (w0, w1) = s.window[x];
                        let k = (self.out_depth / self.meta[x].depth.max(1)).trailing_zeros() as usize;
                        let (c0, c1) = (s.core.0 >> k, s.core.1 >> k);
                        let plane = self.meta[x].plane;
                        let info = &self.tail.bufs[x];
                        let data = &tail_arena[info.offset..info.offset + info.len];
                        let planes = w1 - w0;
                        norm::accumulate_moments(pool, data, c, groups, planes, plane, c0 - w0, c1 - w0, &mut moments[..2 * groups]);
                    }
                    None => {
                        let (w0, w1) = s.window[self.out_buf];
                        let info = &self.tail.bufs[self.out_buf];
                        let m = self.meta[self.out_buf];
                        let planes = w1 - w0;
                        let (a, b) = s.core;
                        for ch in 0..m.chans {
                            let src = (ch * planes + a - w0) * m.plane;
                            let dst = (ch * self.out_depth + a) * m.plane;
                            let len = (b - a) * m.plane;
                            out[dst..dst + len].copy_from_slice(&tail_arena[info.offset + src..info.offset + src + len]);
                        }
                    }
                }
            }
            if let Some(j) = pass.target {
                if let Op::Stats { x, c, groups, eps, gamma, beta, out: sb, .. } = self.tail.ops[j] {
                    let n = (self.meta[x].depth * self.meta[x].plane * (c / groups)) as f64;
                    let at = self.stats_at[sb].unwrap_or(0);
                    norm::finalize(&moments[..2 * groups], n, c, groups, eps, &params.vecs[gamma], &params.vecs[beta], &mut stats[at..at + 2 * c]);
                }
            }
        }
    }

    /// The prefix arena slice of buffer `b` (e.g. the decoder's input).
    pub fn prefix_buffer<'a>(&self, arena: &'a mut [f32], b: BufId) -> &'a mut [f32] {
        let i = &self.prefix.bufs[b];
        &mut arena[i.offset..i.offset + i.len]
    }

    pub fn cut(&self) -> usize {
        self.t0
    }
}
