//! Nearest-neighbour x2 upsampling of every spatial axis (`F.interpolate(scale_factor=2,
//! mode="nearest")`); backward sums the 8 copies.

use rayon::prelude::*;

use super::{check_len, Dims, LayerError};

pub fn upsample2_dims(xd: Dims) -> Dims {
    Dims::new(xd.n, xd.c, xd.d * 2, xd.h * 2, xd.w * 2)
}

pub fn upsample2_forward(x: &[f32], xd: Dims) -> Result<(Vec<f32>, Dims), LayerError> {
    check_len("upsample", "input", x.len(), xd.numel())?;
    let yd = upsample2_dims(xd);
    let mut y = vec![0.0f32; yd.numel()];
    let (s, so) = (xd.spatial(), yd.spatial());
    y.par_chunks_mut(so).zip(x.par_chunks(s)).for_each(|(yc, xc)| {
        for od in 0..yd.d {
            for oh in 0..yd.h {
                let src = &xc[((od / 2) * xd.h + oh / 2) * xd.w..][..xd.w];
                let dst = &mut yc[(od * yd.h + oh) * yd.w..][..yd.w];
                for (ow, v) in dst.iter_mut().enumerate() {
                    *v = src[ow / 2];
                }
            }
        }
    });
    Ok((y, yd))
}

pub fn upsample2_backward(dy: &[f32], xd: Dims) -> Result<Vec<f32>, LayerError> {
    let yd = upsample2_dims(xd);
    check_len("upsample", "output gradient", dy.len(), yd.numel())?;
    let mut dx = vec![0.0f32; xd.numel()];
    let (s, so) = (xd.spatial(), yd.spatial());
    dx.par_chunks_mut(s).zip(dy.par_chunks(so)).for_each(|(dxc, dyc)| {
        for od in 0..yd.d {
            for oh in 0..yd.h {
                let src = &dyc[(od * yd.h + oh) * yd.w..][..yd.w];
                let dst = &mut dxc[((od / 2) * xd.h + oh / 2) * xd.w..][..xd.w];
                for (ow, &v) in src.iter().enumerate() {
                    dst[ow / 2] += v;
                }
            }
        }
    });
    Ok(dx)
}
