//! Multi-head self-attention over all voxels, flash-style: queries in blocks, keys streamed in
//! blocks with a running max and sum, so no N x N matrix ever exists. Input `qkv` is `[3C, N]`
//! (q, k, v stacked by channel, head h = channels h*dh..(h+1)*dh); output `out = x + attn`
//! (or `attn` alone when no residual is given).

use crate::fastmath::exp;
use crate::gemm::{microkernel, with_tile, Kernel, Tile, MR};
use crate::pool::Pool;

/// Queries per task (a multiple of the microkernel's MR).
pub const BQ: usize = 4 * MR;

/// Keys per streamed block for B panels of width `nr` (a multiple of it).
fn bk_of(nr: usize) -> usize {
    4 * nr
}

fn dh_pad(dh: usize, nr: usize) -> usize {
    dh.div_ceil(nr) * nr
}

/// Per-thread workspace floats for head size `dh` and panel width `nr`.
fn ws_len_nr(dh: usize, nr: usize) -> usize {
    let bk = bk_of(nr);
    // q panels, k panels, scores, p panels, v^T panels, output rows, max, sum
    BQ * dh + bk * dh + BQ * bk + BQ * bk + bk * dh_pad(dh, nr) + BQ * dh + 2 * BQ
}

/// Per-thread workspace floats for head size `dh` (enough for every kernel).
pub fn ws_len(dh: usize) -> usize {
    Kernel::ALL.into_iter().map(|k| ws_len_nr(dh, k.nr())).max().unwrap_or(0)
}

#[derive(Clone, Copy)]
struct Ptr(*mut f32);
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}
impl Ptr {
    unsafe fn at(&self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

/// Attention of every head; both products run on the selected GEMM microkernel with small
/// packed panels.
#[allow(clippy::too_many_arguments)]
pub fn attention(pool: &Pool, qkv: &[f32], x: Option<&[f32]>, c: usize, n: usize, dh: usize, out: &mut [f32], ws: &mut [f32]) {
    attention_with(crate::gemm::selected(), pool, qkv, x, c, n, dh, out, ws)
}

/// `attention` on microkernel `kernel` (the portable one where the CPU lacks it).
#[allow(clippy::too_many_arguments)]
pub fn attention_with(kernel: Kernel, pool: &Pool, qkv: &[f32], x: Option<&[f32]>, c: usize, n: usize, dh: usize, out: &mut [f32], ws: &mut [f32]) {
    with_tile!(kernel, t => attention_tiled(t, pool, qkv, x, c, n, dh, out, ws))
}

#[allow(clippy::too_many_arguments)]
fn attention_tiled<T: Tile>(t: T, pool: &Pool, qkv: &[f32], x: Option<&[f32]>, c: usize, n: usize, dh: usize, out: &mut [f32], ws: &mut [f32]) {
    let nr = T::NR;
    let bkm = bk_of(nr);
    let heads = c / dh;
    let scale = 1.0 / (dh as f32).sqrt();
    let qblocks = n.div_ceil(BQ);
    let per = ws_len(dh);
    debug_assert!(ws_len_nr(dh, nr) <= per);
    debug_assert!(ws.len() >= pool.threads() * per);
    let wsp = Ptr(ws.as_mut_ptr());
    let outp = Ptr(out.as_mut_ptr());
    let dp = dh_pad(dh, nr);
    pool.for_each_sized(heads * qblocks, 2 * n * n * c, &|task, tid| {
        let h = task / qblocks;
        let i0 = (task % qblocks) * BQ;
        let bq = BQ.min(n - i0);
        // SAFETY: one workspace slice per thread.
        let w = unsafe { std::slice::from_raw_parts_mut(wsp.at(tid * per), per) };
        let (qp, rest) = w.split_at_mut(BQ * dh);
        let (kp, rest) = rest.split_at_mut(bkm * dh);
        let (s, rest) = rest.split_at_mut(BQ * bkm);
        let (pp, rest) = rest.split_at_mut(BQ * bkm);
        let (vp, rest) = rest.split_at_mut(bkm * dp);
        let (o, rest) = rest.split_at_mut(BQ * dh);
        let (mx, l) = rest.split_at_mut(BQ);
        let row = |base: usize, ch: usize| &qkv[(base + h * dh + ch) * n..(base + h * dh + ch + 1) * n];
        // Q panels: qp[p * dh * MR + ch * MR + r] = q[ch, i0 + p*MR + r] (zero past bq).
        for p in 0..BQ / MR {
            for ch in 0..dh {
                let q = row(0, ch);
                for r in 0..MR {
                    let i = p * MR + r;
                    qp[(p * dh + ch) * MR + r] = if i < bq { q[i0 + i] } else { 0.0 };
                }
            }
        }
        o.fill(0.0);
        mx.fill(f32::NEG_INFINITY);
        l.fill(0.0);
        let qpanels = bq.div_ceil(MR);
        let mut j0 = 0;
        while j0 < n {
            let bk = bkm.min(n - j0);
            let kpanels = bk.div_ceil(nr);
            // K panels: kp[jp * dh * nr + ch * nr + j] = k[ch, j0 + jp*nr + j].
            for jp in 0..kpanels {
                for ch in 0..dh {
                    let k = row(c, ch);
                    let dst = &mut kp[(jp * dh + ch) * nr..(jp * dh + ch + 1) * nr];
                    for (j, d) in dst.iter_mut().enumerate() {
                        let jj = jp * nr + j;
                        *d = if jj < bk { k[j0 + jj] } else { 0.0 };
                    }
                }
            }
            // V^T panels: vp[cp * bk * nr + j * nr + cc] = v[cp*nr + cc, j0 + j].
            for cp in 0..dp / nr {
                for cc in 0..nr {
                    let ch = cp * nr + cc;
                    if ch < dh {
                        let v = &row(2 * c, ch)[j0..j0 + bk];
                        for (j, &val) in v.iter().enumerate() {
                            vp[(cp * bk + j) * nr + cc] = val;
                        }
                    } else {
                        for j in 0..bk {
                            vp[(cp * bk + j) * nr + cc] = 0.0;
                        }
                    }
                }
            }
            s[..bq * bkm].fill(0.0);
            for p in 0..qpanels {
                let rows = MR.min(bq - p * MR);
                for jp in 0..kpanels {
                    let cols = nr.min(bk - jp * nr);
                    microkernel(t, dh, rows, &qp[p * dh * MR..(p + 1) * dh * MR], &kp[jp * dh * nr..(jp + 1) * dh * nr], &mut s[p * MR * bkm + jp * nr..], bkm, cols);
                }
            }
            // Online softmax; P panels: pp[p * bk * MR + j * MR + r] = P[p*MR + r, j].
            for i in 0..bq {
                let srow = &mut s[i * bkm..i * bkm + bk];
                let mut m_new = mx[i];
                for v in srow.iter_mut() {
                    *v *= scale;
                    m_new = m_new.max(*v);
                }
                let alpha = if mx[i] == f32::NEG_INFINITY { 0.0 } else { exp(mx[i] - m_new) };
                let mut sum = 0f32;
                for v in srow.iter_mut() {
                    *v = exp(*v - m_new);
                    sum += *v;
                }
                l[i] = l[i] * alpha + sum;
                mx[i] = m_new;
                o[i * dh..(i + 1) * dh].iter_mut().for_each(|v| *v *= alpha);
                let (p, r) = (i / MR, i % MR);
                for (j, &v) in srow.iter().enumerate() {
                    pp[(p * bk + j) * MR + r] = v;
                }
            }
            // Rows past bq in the last panel are never written back (rows limit below).
            for p in 0..qpanels {
                let rows = MR.min(bq - p * MR);
                for cp in 0..dp / nr {
                    let cols = nr.min(dh - cp * nr);
                    microkernel(t, bk, rows, &pp[p * bk * MR..(p + 1) * bk * MR], &vp[cp * bk * nr..(cp + 1) * bk * nr], &mut o[p * MR * dh + cp * nr..], dh, cols);
                }
            }
            j0 += bk;
        }
        for ch in 0..dh {
            let cc = h * dh + ch;
            for i in 0..bq {
                let idx = cc * n + i0 + i;
                // SAFETY: tasks write disjoint (channel range, token range) tiles.
                unsafe { *outp.at(idx) = x.map_or(0.0, |x| x[idx]) + o[i * dh + ch] / l[i] };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_softmax_attention() {
        let pool = Pool::new(2).unwrap();
        let (c, n, dh) = (80usize, 150usize, 40usize);
        let qkv: Vec<f32> = (0..3 * c * n).map(|i| ((i * 29 % 41) as f32 - 20.0) / 15.0).collect();
        let x: Vec<f32> = (0..c * n).map(|i| (i % 7) as f32).collect();
        let mut ws = vec![0f32; 2 * ws_len(dh)];
        for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
            let mut out = vec![0f32; c * n];
            attention_with(kernel, &pool, &qkv, Some(&x), c, n, dh, &mut out, &mut ws);
            check(&qkv, &x, &out, c, n, dh);
        }
    }

    fn check(qkv: &[f32], x: &[f32], out: &[f32], c: usize, n: usize, dh: usize) {
        for h in 0..c / dh {
            for i in 0..n {
                let mut sc: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..dh)
                            .map(|d| (qkv[(h * dh + d) * n + i] * qkv[(c + h * dh + d) * n + j]) as f64)
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                sc.iter_mut().for_each(|v| *v = (*v - m).exp());
                let z: f64 = sc.iter().sum();
                for d in 0..dh {
                    let want: f64 = (0..n).map(|j| sc[j] / z * qkv[(2 * c + h * dh + d) * n + j] as f64).sum::<f64>()
                        + x[(h * dh + d) * n + i] as f64;
                    let got = out[(h * dh + d) * n + i] as f64;
                    assert!((got - want).abs() < 1e-4, "{got} {want}");
                }
            }
        }
    }
}
