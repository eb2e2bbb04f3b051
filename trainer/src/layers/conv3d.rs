//! 3-D convolution (cross-correlation, zero padding, optional bias) by im2col + SGEMM.
//!
//! Covers every conv of the models: 3x3x3 stride 1 pad 1, 1x1x1 (no im2col: the input is the
//! column matrix), stride-2 symmetric pad 1 (UNet downsample), stride-2 with the encoder's
//! asymmetric END pad (`pad_lo = 0, pad_hi = 1`), and kernel 4 stride 2/1 pad 1 (discriminator).
//! The column matrix is built for a slab of output depth slices at a time so its memory stays
//! bounded; im2col/col2im run in parallel over rows/input channels, the GEMMs are threaded.
//! Backward recomputes the columns from the saved input instead of storing them.

use rayon::prelude::*;

use super::gemm::sgemm_strided;
use super::{check_len, Dims, LayerError};
use crate::params::{Param, ParamError, ParamStore};

/// Upper bound on the column buffer, in f32 values (16 MiB).
const COL_BUDGET: usize = 1 << 22;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conv3d {
    pub cin: usize,
    pub cout: usize,
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    /// Zero padding before the first voxel of each axis.
    pub pad_lo: [usize; 3],
    /// Zero padding after the last voxel of each axis.
    pub pad_hi: [usize; 3],
    /// `[cout, cin, kd, kh, kw]`.
    pub weight: Param,
    pub bias: Option<Param>,
    /// Upper bound on the im2col buffer in f32 values; the output is processed in slabs of
    /// depth slices that fit (default 4 Mi values = 16 MiB).
    pub col_budget: usize,
}

impl Conv3d {
    /// Registers `{prefix}.weight` (and `{prefix}.bias` when `bias`) in the store; cubic kernel,
    /// equal stride and symmetric padding on every axis.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        bias: bool,
    ) -> Result<Self, ParamError> {
        let weight = store.add(&format!("{prefix}.weight"), &[cout, cin, kernel, kernel, kernel])?;
        let bias = if bias { Some(store.add(&format!("{prefix}.bias"), &[cout])?) } else { None };
        Ok(Conv3d {
            cin,
            cout,
            kernel: [kernel; 3],
            stride: [stride; 3],
            pad_lo: [pad; 3],
            pad_hi: [pad; 3],
            weight,
            bias,
            col_budget: COL_BUDGET,
        })
    }

    /// Replaces the padding with an asymmetric one (the encoder's downsample: lo 0, hi 1).
    pub fn with_padding(mut self, lo: usize, hi: usize) -> Self {
        self.pad_lo = [lo; 3];
        self.pad_hi = [hi; 3];
        self
    }

    fn kvol(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.kernel[2]
    }

    fn pointwise(&self) -> bool {
        self.kernel == [1; 3] && self.stride == [1; 3] && self.pad_lo == [0; 3] && self.pad_hi == [0; 3]
    }

    /// Output shape for an input shape; an error when the input is too small or has the wrong
    /// number of channels.
    pub fn out_dims(&self, x: Dims) -> Result<Dims, LayerError> {
        if x.c != self.cin {
            return Err(LayerError::Channels { layer: "conv3d", expected: self.cin, found: x.c });
        }
        let ins = [x.d, x.h, x.w];
        let mut out = [0usize; 3];
        for a in 0..3 {
            let padded = ins[a] + self.pad_lo[a] + self.pad_hi[a];
            if padded < self.kernel[a] || self.stride[a] == 0 {
                return Err(LayerError::Config {
                    layer: "conv3d",
                    msg: format!("input extent {} (padded {padded}) is smaller than kernel {}", ins[a], self.kernel[a]),
                });
            }
            out[a] = (padded - self.kernel[a]) / self.stride[a] + 1;
        }
        Ok(Dims::new(x.n, self.cout, out[0], out[1], out[2]))
    }

    /// Output depth slices per column slab.
    fn slab(&self, od: usize, plane: usize) -> usize {
        if self.pointwise() {
            return od.max(1);
        }
        let per = self.cin * self.kvol() * plane;
        (self.col_budget / per.max(1)).clamp(1, od.max(1))
    }

    /// Fills `col` (`[cin*kvol, (od1-od0)*Ho*Wo]`) for output depth slices `od0..od1` of one sample.
    fn im2col(&self, xn: &[f32], xd: Dims, yd: Dims, od0: usize, od1: usize, col: &mut [f32]) {
        let nc = (od1 - od0) * yd.h * yd.w;
        let [kd, kh, kw] = self.kernel;
        let s = xd.spatial();
        col[..nc * self.cin * self.kvol()].par_chunks_mut(nc).enumerate().for_each(|(r, row)| {
            let c_kw = r % kw;
            let c_kh = (r / kw) % kh;
            let c_kd = (r / (kw * kh)) % kd;
            let ci = r / (kw * kh * kd);
            let xc = &xn[ci * s..(ci + 1) * s];
            let mut j = 0;
            for od in od0..od1 {
                let id = (od * self.stride[0] + c_kd) as isize - self.pad_lo[0] as isize;
                if id < 0 || id >= xd.d as isize {
                    row[j..j + yd.h * yd.w].fill(0.0);
                    j += yd.h * yd.w;
                    continue;
                }
                for oh in 0..yd.h {
                    let ih = (oh * self.stride[1] + c_kh) as isize - self.pad_lo[1] as isize;
                    if ih < 0 || ih >= xd.h as isize {
                        row[j..j + yd.w].fill(0.0);
                        j += yd.w;
                        continue;
                    }
                    let base = (id as usize * xd.h + ih as usize) * xd.w;
                    for ow in 0..yd.w {
                        let iw = (ow * self.stride[2] + c_kw) as isize - self.pad_lo[2] as isize;
                        row[j] = if iw < 0 || iw >= xd.w as isize { 0.0 } else { xc[base + iw as usize] };
                        j += 1;
                    }
                }
            }
        });
    }

    /// Scatter-adds `dcol` back into one sample's input gradient (parallel over input channels).
    fn col2im(&self, dcol: &[f32], xd: Dims, yd: Dims, od0: usize, od1: usize, dxn: &mut [f32]) {
        let nc = (od1 - od0) * yd.h * yd.w;
        let [kd, kh, kw] = self.kernel;
        let kvol = self.kvol();
        dxn.par_chunks_mut(xd.spatial()).enumerate().for_each(|(ci, dxc)| {
            for kk in 0..kvol {
                let r = ci * kvol + kk;
                let row = &dcol[r * nc..(r + 1) * nc];
                let c_kw = kk % kw;
                let c_kh = (kk / kw) % kh;
                let c_kd = kk / (kw * kh);
                debug_assert!(c_kd < kd);
                let mut j = 0;
                for od in od0..od1 {
                    let id = (od * self.stride[0] + c_kd) as isize - self.pad_lo[0] as isize;
                    if id < 0 || id >= xd.d as isize {
                        j += yd.h * yd.w;
                        continue;
                    }
                    for oh in 0..yd.h {
                        let ih = (oh * self.stride[1] + c_kh) as isize - self.pad_lo[1] as isize;
                        if ih < 0 || ih >= xd.h as isize {
                            j += yd.w;
                            continue;
                        }
                        let base = (id as usize * xd.h + ih as usize) * xd.w;
                        for ow in 0..yd.w {
                            let iw = (ow * self.stride[2] + c_kw) as isize - self.pad_lo[2] as isize;
                            if iw >= 0 && iw < xd.w as isize {
                                dxc[base + iw as usize] += row[j];
                            }
                            j += 1;
                        }
                    }
                }
            }
        });
    }

    /// `y = conv(x) + bias`; returns the output and its shape.
    pub fn forward(&self, p: &[f32], x: &[f32], xd: Dims) -> Result<(Vec<f32>, Dims), LayerError> {
        let yd = self.out_dims(xd)?;
        check_len("conv3d", "input", x.len(), xd.numel())?;
        let w = self.weight.of(p);
        let k = self.cin * self.kvol();
        let (s, so, plane) = (xd.spatial(), yd.spatial(), yd.h * yd.w);
        let mut y = vec![0.0f32; yd.numel()];
        let slab = self.slab(yd.d, plane);
        let mut col = if self.pointwise() { Vec::new() } else { vec![0.0f32; k * slab * plane] };
        for ni in 0..xd.n {
            let xn = &x[ni * self.cin * s..(ni + 1) * self.cin * s];
            let yn = &mut y[ni * self.cout * so..(ni + 1) * self.cout * so];
            let mut od0 = 0;
            while od0 < yd.d {
                let od1 = (od0 + slab).min(yd.d);
                let nc = (od1 - od0) * plane;
                let c_out = &mut yn[od0 * plane..];
                if self.pointwise() {
                    sgemm_strided(self.cout, k, nc, 1.0, w, k, 1, &xn[od0 * plane..], s, 1, 0.0, c_out, so, 1);
                } else {
                    self.im2col(xn, xd, yd, od0, od1, &mut col);
                    sgemm_strided(self.cout, k, nc, 1.0, w, k, 1, &col, nc, 1, 0.0, c_out, so, 1);
                }
                od0 = od1;
            }
            if let Some(bp) = self.bias {
                let b = bp.of(p);
                yn.par_chunks_mut(so).zip(b.par_iter()).for_each(|(ch, &bv)| ch.iter_mut().for_each(|v| *v += bv));
            }
        }
        Ok((y, yd))
    }

    /// Accumulates weight/bias gradients into `g` and returns the input gradient.
    pub fn backward(&self, p: &[f32], g: &mut [f32], x: &[f32], xd: Dims, dy: &[f32]) -> Result<Vec<f32>, LayerError> {
        let yd = self.out_dims(xd)?;
        check_len("conv3d", "input", x.len(), xd.numel())?;
        check_len("conv3d", "output gradient", dy.len(), yd.numel())?;
        let w = self.weight.of(p);
        let k = self.cin * self.kvol();
        let (s, so, plane) = (xd.spatial(), yd.spatial(), yd.h * yd.w);
        let mut dx = vec![0.0f32; xd.numel()];
        let slab = self.slab(yd.d, plane);
        let pw = self.pointwise();
        let mut col = if pw { Vec::new() } else { vec![0.0f32; k * slab * plane] };
        let mut dcol = if pw { Vec::new() } else { vec![0.0f32; k * slab * plane] };
        for ni in 0..xd.n {
            let xn = &x[ni * self.cin * s..(ni + 1) * self.cin * s];
            let dyn_ = &dy[ni * self.cout * so..(ni + 1) * self.cout * so];
            let dxn = &mut dx[ni * self.cin * s..(ni + 1) * self.cin * s];
            let mut od0 = 0;
            while od0 < yd.d {
                let od1 = (od0 + slab).min(yd.d);
                let nc = (od1 - od0) * plane;
                let dy_c = &dyn_[od0 * plane..];
                let gw = self.weight.of_mut(g);
                if pw {
                    let xc = &xn[od0 * plane..];
                    // dW[co, ci] += sum_j dy[co, j] * x[ci, j]
                    sgemm_strided(self.cout, nc, k, 1.0, dy_c, so, 1, xc, 1, s, 1.0, gw, k, 1);
                    // dx[ci, j] = sum_co W[co, ci] * dy[co, j]
                    sgemm_strided(k, self.cout, nc, 1.0, w, 1, k, dy_c, so, 1, 1.0, &mut dxn[od0 * plane..], s, 1);
                } else {
                    self.im2col(xn, xd, yd, od0, od1, &mut col);
                    sgemm_strided(self.cout, nc, k, 1.0, dy_c, so, 1, &col, 1, nc, 1.0, gw, k, 1);
                    sgemm_strided(k, self.cout, nc, 1.0, w, 1, k, dy_c, so, 1, 0.0, &mut dcol, nc, 1);
                    self.col2im(&dcol, xd, yd, od0, od1, dxn);
                }
                od0 = od1;
            }
        }
        if let Some(bp) = self.bias {
            let gb = bp.of_mut(g);
            for (co, gbv) in gb.iter_mut().enumerate() {
                let mut acc = 0.0f64;
                for ni in 0..xd.n {
                    let base = (ni * self.cout + co) * so;
                    acc += dy[base..base + so].iter().map(|&v| v as f64).sum::<f64>();
                }
                *gbv += acc as f32;
            }
        }
        Ok(dx)
    }
}
