//! The backend-neutral graph: the networks as an op list over numbered buffers, with weights
//! referred to by index into `model::Params` (kept in the blob's PyTorch layout), each buffer's
//! lifetime (first to last op touching it), and offsets in one arena assigned greedily (largest
//! first, lowest free offset among buffers whose lifetimes overlap), so memory is reused once a
//! value is dead. Each backend lowers it: the CPU packs the weights and picks slab heights and
//! workspaces (`lower_cpu`), the CUDA backend turns every op into launches (`cuda::lower`).

use crate::conv::ConvGeom;
use crate::error::RuntimeError;

pub type BufId = usize;

/// Where a convolution's bias comes from.
#[derive(Debug, Clone, Copy)]
pub enum Bias {
    /// A constant vector in `Params::vecs`.
    Param(usize),
    /// A per-step vector (conv bias + time-embedding projection) in the runtime's dynamic slots.
    Dynamic(usize),
}

#[derive(Debug, Clone, Copy)]
pub enum InitKind {
    Bias,
    Residual(BufId),
    Accumulate,
}

#[derive(Debug, Clone)]
pub enum Op {
    /// Convolution with the weight matrix `w` (`[cout, cin * k^3]`); with `norm`, the input
    /// first goes through GroupNorm (its scale/shift buffer) and optionally SiLU. `out == x`
    /// (only for 1x1 convolutions that do not widen, see `Op::in_place`) overwrites the input.
    Conv { g: ConvGeom, w: usize, bias: Bias, x: BufId, norm: Option<(BufId, bool)>, out: BufId, init: InitKind },
    /// GroupNorm statistics of `x` (`[c, p]`) into a `2c` scale/shift buffer.
    Stats { x: BufId, c: usize, p: usize, groups: usize, eps: f32, gamma: usize, beta: usize, out: BufId },
    /// Self-attention on a `[3c, n]` qkv buffer; adds `res` when given.
    Attn { qkv: BufId, res: Option<BufId>, c: usize, n: usize, dh: usize, out: BufId },
    /// `out = concat(a, b)` along channels.
    Concat { a: BufId, b: BufId, out: BufId },
}

impl Op {
    /// Whether the op is a convolution writing over its own input.
    pub fn in_place(&self) -> bool {
        matches!(*self, Op::Conv { x, out, .. } if x == out)
    }

    /// Every buffer the op reads or writes.
    pub fn touches(&self) -> Vec<BufId> {
        match *self {
            Op::Conv { x, norm, out, init, .. } => {
                let mut v = vec![x, out];
                if let Some((s, _)) = norm {
                    v.push(s);
                }
                if let InitKind::Residual(r) = init {
                    v.push(r);
                }
                v
            }
            Op::Stats { x, out, .. } => vec![x, out],
            Op::Attn { qkv, res, out, .. } => {
                let mut v = vec![qkv, out];
                v.extend(res);
                v
            }
            Op::Concat { a, b, out } => vec![a, b, out],
        }
    }
}

#[derive(Debug, Clone)]
pub struct BufInfo {
    pub len: usize,
    pub offset: usize,
    pub first: usize,
    pub last: usize,
}

/// An op list plus its buffers; `plan` assigns offsets.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub ops: Vec<Op>,
    pub bufs: Vec<BufInfo>,
    pub inputs: Vec<BufId>,
    pub outputs: Vec<BufId>,
    /// Floats of the arena after planning.
    pub arena_len: usize,
    pub flops: f64,
}

const ALIGN: usize = 16;

impl Graph {
    pub fn buf(&mut self, len: usize) -> BufId {
        self.bufs.push(BufInfo { len, offset: 0, first: usize::MAX, last: 0 });
        self.bufs.len() - 1
    }

    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Computes lifetimes and offsets. Inputs live from the start, outputs to the end.
    pub fn plan(&mut self) -> Result<(), RuntimeError> {
        let nops = self.ops.len();
        for (i, op) in self.ops.iter().enumerate() {
            for b in op.touches() {
                let info = &mut self.bufs[b];
                info.first = info.first.min(i);
                info.last = info.last.max(i);
            }
        }
        for &b in &self.inputs {
            self.bufs[b].first = 0;
        }
        for &b in &self.outputs {
            self.bufs[b].last = nops.saturating_sub(1);
        }
        for b in &mut self.bufs {
            if b.first == usize::MAX {
                b.first = 0;
                b.last = 0;
            }
        }
        let mut order: Vec<usize> = (0..self.bufs.len()).collect();
        order.sort_by(|&a, &b| self.bufs[b].len.cmp(&self.bufs[a].len).then(a.cmp(&b)));
        let mut placed: Vec<usize> = Vec::new();
        let mut arena = 0usize;
        for &b in &order {
            let (first, last, len) = (self.bufs[b].first, self.bufs[b].last, self.bufs[b].len);
            let mut busy: Vec<(usize, usize)> = placed
                .iter()
                .filter(|&&p| self.bufs[p].first <= last && first <= self.bufs[p].last)
                .map(|&p| (self.bufs[p].offset, self.bufs[p].offset + self.bufs[p].len))
                .collect();
            busy.sort();
            let mut off = 0usize;
            for (s, e) in busy {
                if off.checked_add(len).ok_or(RuntimeError::Overflow("arena"))? <= s {
                    break;
                }
                off = off.max(e.div_ceil(ALIGN) * ALIGN);
            }
            self.bufs[b].offset = off;
            arena = arena.max(off.checked_add(len).ok_or(RuntimeError::Overflow("arena"))?);
            placed.push(b);
        }
        self.arena_len = arena.div_ceil(ALIGN) * ALIGN;
        Ok(())
    }

    /// Sum of all buffer sizes (what a plan without reuse would need), in floats.
    pub fn total_buffer_len(&self) -> usize {
        self.bufs.iter().map(|b| b.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_buffers_are_reused_and_live_ones_never_overlap() {
        let mut g = Graph::default();
        let x = g.buf(100);
        let s = g.buf(16);
        let a = g.buf(100);
        let b = g.buf(100);
        let c = g.buf(50);
        g.inputs.push(x);
        g.outputs.push(c);
        g.push(Op::Stats { x, c: 1, p: 100, groups: 1, eps: 0.0, gamma: 0, beta: 0, out: s });
        g.push(Op::Concat { a: x, b: s, out: a });
        g.push(Op::Concat { a, b: a, out: b });
        g.push(Op::Concat { a: b, b, out: c });
        g.plan().unwrap();
        for i in 0..g.bufs.len() {
            for j in 0..i {
                let (p, q) = (&g.bufs[i], &g.bufs[j]);
                let live = p.first <= q.last && q.first <= p.last;
                let overlap = p.offset < q.offset + q.len && q.offset < p.offset + p.len;
                assert!(!(live && overlap), "{i} and {j} overlap while live");
            }
        }
        assert!(g.arena_len < g.total_buffer_len());
    }
}
