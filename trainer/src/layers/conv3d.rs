//! 3-D convolution (cross-correlation, zero padding, optional bias) by im2col + SGEMM.
//!
//! Covers every conv of the models: 3x3x3 stride 1 pad 1, 1x1x1 (no im2col: the input is the
//! column matrix), stride-2 symmetric pad 1 (UNet downsample), stride-2 with the encoder's
//! asymmetric END pad (`pad_lo = 0, pad_hi = 1`), and kernel 4 stride 2/1 pad 1 (discriminator).
//!
//! Two execution paths, both deterministic (no result depends on the thread count):
//! - stride-1 convs with symmetric padding (the bulk of every model): the output is cut into
//!   tiles of columns whose im2col block fits in cache; tiles run in parallel, each packing its
//!   columns and running one GEMM. The weight gradient sums per-chunk partials in a fixed order;
//!   the input gradient is itself a stride-1 conv of the output gradient with the flipped,
//!   transposed kernel (padding `k-1-p`), computed by the same tiled path.
//! - everything else (strides, the encoder's asymmetric pad): the column matrix is built for a
//!   slab of output depth slices (bounded memory); im2col/col2im run in parallel over rows/input
//!   channels and the GEMMs split their rows over threads.
//!
//! Backward recomputes the columns from the saved input instead of storing them.

use rayon::prelude::*;

use super::gemm::{par_sgemm, sgemm_strided};
use super::{check_len, Dims, LayerError};
use crate::params::{Param, ParamError, ParamStore};

/// Upper bound on the column buffer of the slab path, in f32 values (16 MiB).
const COL_BUDGET: usize = 1 << 22;
/// Target size of one tile's column block in the tiled path, in f32 values (512 KiB: L2-sized).
const TILE_BUDGET: usize = 1 << 17;
/// Fixed number of partial weight-gradient accumulators of the tiled path (deterministic sums).
const DW_CHUNKS: usize = 16;

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
    /// Output columns per tile of the tiled path; `None` sizes tiles to the cache (tests set
    /// tiny tiles to exercise tile boundaries).
    pub tile_cols: Option<usize>,
    /// Whether `backward` computes the input gradient (false for a network's first conv, whose
    /// input is data: `backward` then returns an empty vector).
    pub input_grad: bool,
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
            tile_cols: None,
            input_grad: true,
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
        if self.tiled() {
            let bias = self.bias.map(|b| b.of(p));
            let y = tiled_forward(self.cin, self.cout, self.kernel, self.pad_lo, self.weight.of(p), bias, x, xd, yd, self.tile_cols);
            return Ok((y, yd));
        }
        self.forward_slabs(p, x, xd, yd)
    }

    /// Accumulates weight/bias gradients into `g` and returns the input gradient.
    pub fn backward(&self, p: &[f32], g: &mut [f32], x: &[f32], xd: Dims, dy: &[f32]) -> Result<Vec<f32>, LayerError> {
        let yd = self.out_dims(xd)?;
        check_len("conv3d", "input", x.len(), xd.numel())?;
        check_len("conv3d", "output gradient", dy.len(), yd.numel())?;
        let dx = if self.tiled() {
            tiled_weight_grad(self.cin, self.cout, self.kernel, self.pad_lo, x, xd, dy, yd, self.weight.of_mut(g), self.tile_cols);
            if !self.input_grad {
                self.bias_grad(g, dy, yd);
                return Ok(Vec::new());
            }
            // dx = conv(dy, flip(W)^T) with padding k-1-p.
            let wf = flip_transpose(self.weight.of(p), self.cout, self.cin, self.kernel);
            let pad = [0, 1, 2].map(|a| self.kernel[a] - 1 - self.pad_lo[a]);
            tiled_forward(self.cout, self.cin, self.kernel, pad, &wf, None, dy, yd, xd, self.tile_cols)
        } else {
            let dx = self.backward_slabs(p, g, x, xd, dy, yd);
            if self.input_grad {
                dx
            } else {
                Vec::new()
            }
        };
        self.bias_grad(g, dy, yd);
        Ok(dx)
    }

    /// Stride 1, symmetric padding no larger than the kernel allows, not pointwise.
    fn tiled(&self) -> bool {
        self.stride == [1; 3]
            && self.pad_lo == self.pad_hi
            && (0..3).all(|a| self.pad_lo[a] < self.kernel[a])
            && !self.pointwise()
    }

    fn bias_grad(&self, g: &mut [f32], dy: &[f32], yd: Dims) {
        if let Some(bp) = self.bias {
            let so = yd.spatial();
            let gb = bp.of_mut(g);
            for (co, gbv) in gb.iter_mut().enumerate() {
                let mut acc = 0.0f64;
                for ni in 0..yd.n {
                    let base = (ni * self.cout + co) * so;
                    acc += dy[base..base + so].iter().map(|&v| v as f64).sum::<f64>();
                }
                *gbv += acc as f32;
            }
        }
    }

    fn forward_slabs(&self, p: &[f32], x: &[f32], xd: Dims, yd: Dims) -> Result<(Vec<f32>, Dims), LayerError> {
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
                    par_sgemm(self.cout, k, nc, 1.0, w, k, 1, &xn[od0 * plane..], s, 1, 0.0, c_out, so, 1);
                } else {
                    self.im2col(xn, xd, yd, od0, od1, &mut col);
                    par_sgemm(self.cout, k, nc, 1.0, w, k, 1, &col, nc, 1, 0.0, c_out, so, 1);
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

    fn backward_slabs(&self, p: &[f32], g: &mut [f32], x: &[f32], xd: Dims, dy: &[f32], yd: Dims) -> Vec<f32> {
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
                    par_sgemm(self.cout, nc, k, 1.0, dy_c, so, 1, xc, 1, s, 1.0, gw, k, 1);
                    // dx[ci, j] = sum_co W[co, ci] * dy[co, j]
                    if self.input_grad {
                        par_sgemm(k, self.cout, nc, 1.0, w, 1, k, dy_c, so, 1, 1.0, &mut dxn[od0 * plane..], s, 1);
                    }
                } else {
                    self.im2col(xn, xd, yd, od0, od1, &mut col);
                    par_sgemm(self.cout, nc, k, 1.0, dy_c, so, 1, &col, 1, nc, 1.0, gw, k, 1);
                    if self.input_grad {
                        par_sgemm(k, self.cout, nc, 1.0, w, 1, k, dy_c, so, 1, 0.0, &mut dcol, nc, 1);
                        self.col2im(&dcol, xd, yd, od0, od1, dxn);
                    }
                }
                od0 = od1;
            }
        }
        dx
    }
}

/// Columns per tile and tiles per sample for the tiled path.
fn tiling(k: usize, n_out: usize, tile_cols: Option<usize>) -> (usize, usize) {
    let nt = tile_cols.unwrap_or((TILE_BUDGET / k.max(1)).max(64)).clamp(1, n_out.max(1));
    (nt, n_out.div_ceil(nt))
}

/// Packs output columns `j0..j0+nt` of one sample (stride 1, padding `pad` before each axis)
/// into `col` (`[cin*kvol, nt]`), copying contiguous runs along W.
#[allow(clippy::too_many_arguments)]
fn im2col_tile(cin: usize, kernel: [usize; 3], pad: [usize; 3], xn: &[f32], xd: Dims, yd: Dims, j0: usize, nt: usize, col: &mut [f32]) {
    let [kd, kh, kw] = kernel;
    let kvol = kd * kh * kw;
    let (s, plane) = (xd.spatial(), yd.h * yd.w);
    for r in 0..cin * kvol {
        let (ci, tap) = (r / kvol, r % kvol);
        let (a, b, c) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
        let xc = &xn[ci * s..(ci + 1) * s];
        let row = &mut col[r * nt..(r + 1) * nt];
        let (mut j, mut t) = (j0, 0);
        while t < nt {
            let (od, rem) = (j / plane, j % plane);
            let (oh, ow) = (rem / yd.w, rem % yd.w);
            let run = (yd.w - ow).min(nt - t);
            let id = (od + a) as isize - pad[0] as isize;
            let ih = (oh + b) as isize - pad[1] as isize;
            let dst = &mut row[t..t + run];
            if id < 0 || id >= xd.d as isize || ih < 0 || ih >= xd.h as isize {
                dst.fill(0.0);
            } else {
                // iw = ow + c - pad for ow in the run; the valid ones are contiguous.
                let iw0 = (ow + c) as isize - pad[2] as isize;
                let lo = (-iw0).clamp(0, run as isize) as usize;
                let hi = ((xd.w as isize - iw0).clamp(0, run as isize) as usize).max(lo);
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if hi > lo {
                    let base = (id as usize * xd.h + ih as usize) * xd.w;
                    let src0 = (iw0 + lo as isize) as usize;
                    dst[lo..hi].copy_from_slice(&xc[base + src0..base + src0 + (hi - lo)]);
                }
            }
            t += run;
            j += run;
        }
    }
}

/// Stride-1 conv by tiles of output columns in parallel: `y = W * im2col(x) (+ bias)`.
#[allow(clippy::too_many_arguments)]
fn tiled_forward(
    cin: usize,
    cout: usize,
    kernel: [usize; 3],
    pad: [usize; 3],
    w: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    xd: Dims,
    yd: Dims,
    tile_cols: Option<usize>,
) -> Vec<f32> {
    let k = cin * kernel.iter().product::<usize>();
    let (s, n_out) = (xd.spatial(), yd.spatial());
    let (nt, per) = tiling(k, n_out, tile_cols);
    let tiles: Vec<Vec<f32>> = (0..xd.n * per)
        .into_par_iter()
        .map_init(
            || vec![0.0f32; k * nt],
            |col, t| {
                let (ni, j0) = (t / per, (t % per) * nt);
                let ntt = nt.min(n_out - j0);
                im2col_tile(cin, kernel, pad, &x[ni * cin * s..(ni + 1) * cin * s], xd, yd, j0, ntt, col);
                let mut out = vec![0.0f32; cout * ntt];
                sgemm_strided(cout, k, ntt, 1.0, w, k, 1, col, ntt, 1, 0.0, &mut out, ntt, 1);
                out
            },
        )
        .collect();
    let mut y = vec![0.0f32; yd.numel()];
    y.par_chunks_mut(n_out.max(1)).enumerate().for_each(|(row, yr)| {
        let (ni, co) = (row / cout, row % cout);
        for tt in 0..per {
            let j0 = tt * nt;
            let ntt = nt.min(n_out - j0);
            yr[j0..j0 + ntt].copy_from_slice(&tiles[ni * per + tt][co * ntt..(co + 1) * ntt]);
        }
        if let Some(b) = bias {
            yr.iter_mut().for_each(|v| *v += b[co]);
        }
    });
    y
}

/// Weight gradient of the tiled path: `dW += dy * im2col(x)^T`, summed over a fixed number of
/// chunk partials in a fixed order.
#[allow(clippy::too_many_arguments)]
fn tiled_weight_grad(
    cin: usize,
    cout: usize,
    kernel: [usize; 3],
    pad: [usize; 3],
    x: &[f32],
    xd: Dims,
    dy: &[f32],
    yd: Dims,
    gw: &mut [f32],
    tile_cols: Option<usize>,
) {
    let k = cin * kernel.iter().product::<usize>();
    let (s, n_out) = (xd.spatial(), yd.spatial());
    let (nt, per) = tiling(k, n_out, tile_cols);
    let total = xd.n * per;
    let chunks = DW_CHUNKS.min(total).max(1);
    let partials: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            // dW [cout, k] += dy_tile [cout, nt] * colT [nt, k]. The column block is transposed
            // (in cache) first: a GEMM with the long k dimension as N runs ~3x faster with
            // matrixmultiply than the [k, nt] x [nt, cout] orientation.
            let mut acc = vec![0.0f32; cout * k];
            let mut col = vec![0.0f32; k * nt];
            let mut colt = vec![0.0f32; k * nt];
            for t in c * total / chunks..(c + 1) * total / chunks {
                let (ni, j0) = (t / per, (t % per) * nt);
                let ntt = nt.min(n_out - j0);
                im2col_tile(cin, kernel, pad, &x[ni * cin * s..(ni + 1) * cin * s], xd, yd, j0, ntt, &mut col);
                transpose_block(&col[..k * ntt], k, ntt, &mut colt[..k * ntt]);
                let dyt = &dy[ni * cout * n_out + j0..];
                sgemm_strided(cout, ntt, k, 1.0, dyt, n_out, 1, &colt, k, 1, 1.0, &mut acc, k, 1);
            }
            acc
        })
        .collect();
    for part in &partials {
        gw.iter_mut().zip(part).for_each(|(g, p)| *g += p);
    }
}

/// `dst[j * rows + r] = src[r * cols + j]` in 16x16 blocks.
fn transpose_block(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const B: usize = 16;
    for r0 in (0..rows).step_by(B) {
        for j0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for j in j0..(j0 + B).min(cols) {
                    dst[j * rows + r] = src[r * cols + j];
                }
            }
        }
    }
}

/// `W[co, ci, a, b, c]` -> `W'[ci, co, k-1-a, k-1-b, k-1-c]` (the transposed conv's kernel).
fn flip_transpose(w: &[f32], cout: usize, cin: usize, kernel: [usize; 3]) -> Vec<f32> {
    let kvol = kernel.iter().product::<usize>();
    let mut wf = vec![0.0f32; w.len()];
    for co in 0..cout {
        for ci in 0..cin {
            let src = &w[(co * cin + ci) * kvol..(co * cin + ci + 1) * kvol];
            let dst = &mut wf[(ci * cout + co) * kvol..(ci * cout + co + 1) * kvol];
            for (t, &v) in src.iter().enumerate() {
                dst[kvol - 1 - t] = v;
            }
        }
    }
    wf
}

