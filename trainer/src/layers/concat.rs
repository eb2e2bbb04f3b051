//! Channel concatenation `cat([a, b], dim=1)` of two NCDHW tensors with equal N and spatial
//! shape; backward splits the gradient.

use super::{check_len, Dims, LayerError};

pub fn concat_forward(a: &[f32], ad: Dims, b: &[f32], bd: Dims) -> Result<(Vec<f32>, Dims), LayerError> {
    if (ad.n, ad.d, ad.h, ad.w) != (bd.n, bd.d, bd.h, bd.w) {
        return Err(LayerError::Config { layer: "concat", msg: format!("shapes {ad:?} and {bd:?} differ outside channels") });
    }
    check_len("concat", "first input", a.len(), ad.numel())?;
    check_len("concat", "second input", b.len(), bd.numel())?;
    let s = ad.spatial();
    let yd = ad.with_c(ad.c + bd.c);
    let mut y = Vec::with_capacity(yd.numel());
    for n in 0..ad.n {
        y.extend_from_slice(&a[n * ad.c * s..(n + 1) * ad.c * s]);
        y.extend_from_slice(&b[n * bd.c * s..(n + 1) * bd.c * s]);
    }
    Ok((y, yd))
}

/// Splits the gradient of `cat([a, b])` into the gradients of `a` (`ca` channels) and `b`.
pub fn concat_backward(dy: &[f32], yd: Dims, ca: usize) -> Result<(Vec<f32>, Vec<f32>), LayerError> {
    check_len("concat", "output gradient", dy.len(), yd.numel())?;
    if ca > yd.c {
        return Err(LayerError::Config { layer: "concat", msg: format!("split {ca} exceeds {} channels", yd.c) });
    }
    let s = yd.spatial();
    let cb = yd.c - ca;
    let (mut da, mut db) = (Vec::with_capacity(yd.n * ca * s), Vec::with_capacity(yd.n * cb * s));
    for n in 0..yd.n {
        let base = n * yd.c * s;
        da.extend_from_slice(&dy[base..base + ca * s]);
        db.extend_from_slice(&dy[base + ca * s..base + yd.c * s]);
    }
    Ok((da, db))
}
