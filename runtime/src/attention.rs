//! Multi-head self-attention over all voxels, flash-style: queries in blocks, keys streamed in
//! blocks with a running max and sum, so no N x N matrix ever exists. Input `qkv` is `[3C, N]`
//! (q, k, v stacked by channel, head h = channels h*dh..(h+1)*dh); output `out = x + attn`
//! (or `attn` alone when no residual is given).

use crate::fastmath::exp;
use crate::pool::Pool;

pub const BQ: usize = 32;
pub const BK: usize = 128;

/// Per-thread workspace floats for head size `dh`.
pub fn ws_len(dh: usize) -> usize {
    BQ * BK + BQ * dh + 2 * BQ
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

#[allow(clippy::too_many_arguments)]
pub fn attention(pool: &Pool, qkv: &[f32], x: Option<&[f32]>, c: usize, n: usize, dh: usize, out: &mut [f32], ws: &mut [f32]) {
    let heads = c / dh;
    let scale = 1.0 / (dh as f32).sqrt();
    let qblocks = n.div_ceil(BQ);
    let per = ws_len(dh);
    debug_assert!(ws.len() >= pool.threads() * per);
    let wsp = Ptr(ws.as_mut_ptr());
    let outp = Ptr(out.as_mut_ptr());
    pool.for_each(heads * qblocks, &|task, tid| {
        let h = task / qblocks;
        let i0 = (task % qblocks) * BQ;
        let bq = BQ.min(n - i0);
        // SAFETY: one workspace slice per thread.
        let w = unsafe { std::slice::from_raw_parts_mut(wsp.at(tid * per), per) };
        let (s, rest) = w.split_at_mut(BQ * BK);
        let (o, rest) = rest.split_at_mut(BQ * dh);
        let (mx, l) = rest.split_at_mut(BQ);
        o.fill(0.0);
        mx.fill(f32::NEG_INFINITY);
        l.fill(0.0);
        let q = |ch: usize| &qkv[(h * dh + ch) * n..(h * dh + ch + 1) * n];
        let k = |ch: usize| &qkv[(c + h * dh + ch) * n..(c + h * dh + ch + 1) * n];
        let v = |ch: usize| &qkv[(2 * c + h * dh + ch) * n..(2 * c + h * dh + ch + 1) * n];
        let mut j0 = 0;
        while j0 < n {
            let bk = BK.min(n - j0);
            s[..bq * BK].fill(0.0);
            for ch in 0..dh {
                let qc = &q(ch)[i0..i0 + bq];
                let kc = &k(ch)[j0..j0 + bk];
                for (i, &qv) in qc.iter().enumerate() {
                    let row = &mut s[i * BK..i * BK + bk];
                    for (sv, &kv) in row.iter_mut().zip(kc) {
                        *sv += qv * kv;
                    }
                }
            }
            for i in 0..bq {
                let row = &mut s[i * BK..i * BK + bk];
                let mut m_new = mx[i];
                for sv in row.iter_mut() {
                    *sv *= scale;
                    m_new = m_new.max(*sv);
                }
                let alpha = if mx[i] == f32::NEG_INFINITY { 0.0 } else { exp(mx[i] - m_new) };
                let mut sum = 0f32;
                for sv in row.iter_mut() {
                    *sv = exp(*sv - m_new);
                    sum += *sv;
                }
                l[i] = l[i] * alpha + sum;
                mx[i] = m_new;
                let orow = &mut o[i * dh..(i + 1) * dh];
                for (ch, ov) in orow.iter_mut().enumerate() {
                    let vc = &v(ch)[j0..j0 + bk];
                    let mut acc = [0f32; 16];
                    let mut it = row.chunks_exact(16).zip(vc.chunks_exact(16));
                    for (pa, va) in &mut it {
                        for t in 0..16 {
                            acc[t] += pa[t] * va[t];
                        }
                    }
                    let mut dot: f32 = acc.iter().sum();
                    let done = (bk / 16) * 16;
                    for t in done..bk {
                        dot += row[t] * vc[t];
                    }
                    *ov = *ov * alpha + dot;
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
        let (c, n, dh) = (8usize, 150usize, 4usize);
        let qkv: Vec<f32> = (0..3 * c * n).map(|i| ((i * 29 % 41) as f32 - 20.0) / 15.0).collect();
        let x: Vec<f32> = (0..c * n).map(|i| (i % 7) as f32).collect();
        let mut out = vec![0f32; c * n];
        let mut ws = vec![0f32; 2 * ws_len(dh)];
        attention(&pool, &qkv, Some(&x), c, n, dh, &mut out, &mut ws);
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
