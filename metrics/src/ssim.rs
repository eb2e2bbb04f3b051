//! SSIM and MS-SSIM in 3-D as MONAI 1.5's `SSIMMetric` / `MultiScaleSSIMMetric` compute them
//! (`monai.metrics.regression.compute_ssim_and_cs` and `compute_ms_ssim`):
//! - the window is MONAI's Gaussian (per axis `exp(-(x/sigma)^2/2)` at offsets
//!   `(1-k)/2 .. (k-1)/2`, normalised, the 3-D kernel their product) or a uniform box;
//! - `mu`, `E[x^2]`, `E[y^2]`, `E[xy]` are valid (unpadded) convolutions, so the maps are
//!   `(D-kd+1, H-kh+1, W-kw+1)` per channel;
//! - `cs = (2 s_xy + c2) / (s_x + s_y + c2)`, `ssim = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1) * cs`,
//!   `c1 = (k1 L)^2`, `c2 = (k2 L)^2`, each averaged over channels and voxels;
//! - MS-SSIM: at each of `weights.len()` scales take `relu(mean cs)`, then 2x2x2 average-pool
//!   (floor); the last scale uses `relu(mean ssim)`; the result is `prod(value_i ^ weight_i)`.
//!   MONAI refuses an image whose extent `// (len(weights)-1)^2` is at most `kernel_size - 1` on
//!   any axis, with the message of [`MetricError::TooSmallForScales`].
//!
//! The window is applied separably (in-plane per depth slice, then across a rolling ring of
//! `kd` slices), so memory is `5 * kd` in-plane maps of f64 per call, not five whole volumes.

use crate::{same_shape, MetricError, Volume};

/// MONAI's default MS-SSIM weights (five scales).
pub const MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];

/// Window shape of SSIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelType {
    Gaussian,
    Uniform,
}

/// The parameters of `SSIMMetric(spatial_dims=3, ...)`; `Default` is MONAI's defaults
/// (data range 1, Gaussian 11 x 11 x 11 with sigma 1.5, k1 0.01, k2 0.03).
#[derive(Debug, Clone, PartialEq)]
pub struct SsimParams {
    pub data_range: f64,
    pub kernel_type: KernelType,
    /// Window size along D, H, W.
    pub kernel_size: [usize; 3],
    /// Gaussian sigma along D, H, W.
    pub kernel_sigma: [f64; 3],
    pub k1: f64,
    pub k2: f64,
}

impl Default for SsimParams {
    fn default() -> Self {
        SsimParams {
            data_range: 1.0,
            kernel_type: KernelType::Gaussian,
            kernel_size: [11; 3],
            kernel_sigma: [1.5; 3],
            k1: 0.01,
            k2: 0.03,
        }
    }
}

impl SsimParams {
    /// Checks the parameters themselves (sizes positive, sigma and data range positive and finite).
    pub fn check(&self) -> Result<(), MetricError> {
        if self.kernel_size.contains(&0) {
            return Err(MetricError::Parameter(
                "kernel size must be at least 1".into(),
            ));
        }
        if !(self.data_range.is_finite() && self.data_range > 0.0) {
            return Err(MetricError::Parameter(format!(
                "data range {} must be positive",
                self.data_range
            )));
        }
        if self.kernel_type == KernelType::Gaussian
            && self
                .kernel_sigma
                .iter()
                .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(MetricError::Parameter(format!(
                "kernel sigma {:?} must be positive",
                self.kernel_sigma
            )));
        }
        if !(self.k1.is_finite() && self.k2.is_finite()) {
            return Err(MetricError::Parameter("k1 and k2 must be finite".into()));
        }
        Ok(())
    }

    /// The 1-D window along axis `axis` (0 = D, 1 = H, 2 = W), as MONAI builds it in float32.
    pub fn window(&self, axis: usize) -> Vec<f64> {
        let k = self.kernel_size[axis];
        match self.kernel_type {
            KernelType::Uniform => vec![1.0 / k as f64; k],
            KernelType::Gaussian => gaussian_1d(k, self.kernel_sigma[axis] as f32),
        }
    }
}

/// MONAI's `gaussian_1d`: float32 offsets `(1-k)/2 + i`, `exp(-(x/sigma)^2/2)`, each divided
/// in float32 by the float32 sum. The sum is taken exactly and rounded once (torch's own
/// summation order depends on the CPU's vector width and can differ by one unit in the last
/// place). SSIM is sensitive to the window's total weight where the image is flat (the variance
/// terms subtract nearly equal numbers), which is why the window is built in float32 as MONAI
/// builds it rather than in float64.
fn gaussian_1d(k: usize, sigma: f32) -> Vec<f64> {
    let start = (1.0 - k as f32) / 2.0;
    let g: Vec<f32> = (0..k)
        .map(|i| {
            let x = (start + i as f32) / sigma;
            (-(x * x) / 2.0).exp()
        })
        .collect();
    let sum = g.iter().map(|&v| v as f64).sum::<f64>() as f32;
    g.iter().map(|&v| (v / sum) as f64).collect()
}

/// Mean SSIM and mean contrast sensitivity over every channel and map voxel of one pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsimCs {
    pub ssim: f64,
    pub cs: f64,
}

/// `compute_ssim_and_cs` for one batch item, averaged as MONAI's metrics average the maps.
pub fn ssim_and_cs(x: &Volume, y: &Volume, p: &SsimParams) -> Result<SsimCs, MetricError> {
    same_shape(x, y)?;
    p.check()?;
    let [c, d, h, w] = x.shape;
    let [kd, kh, kw] = p.kernel_size;
    if kd > d || kh > h || kw > w {
        return Err(MetricError::Shape(format!(
            "kernel size {:?} is larger than the volume's spatial shape {:?}",
            p.kernel_size,
            [d, h, w]
        )));
    }
    let windows = [p.window(0), p.window(1), p.window(2)];
    let c1 = (p.k1 * p.data_range).powi(2);
    let c2 = (p.k2 * p.data_range).powi(2);
    let (mut ssim_sum, mut cs_sum, mut count) = (0.0f64, 0.0f64, 0usize);
    for ch in 0..c {
        let s = channel_sums(x.channel(ch), y.channel(ch), [d, h, w], &windows, c1, c2);
        ssim_sum += s.0;
        cs_sum += s.1;
        count += s.2;
    }
    Ok(SsimCs {
        ssim: ssim_sum / count as f64,
        cs: cs_sum / count as f64,
    })
}

/// Sums of the SSIM and CS maps of one channel pair, and the number of map voxels.
fn channel_sums(
    x: &[f32],
    y: &[f32],
    [d, h, w]: [usize; 3],
    win: &[Vec<f64>; 3],
    c1: f64,
    c2: f64,
) -> (f64, f64, usize) {
    let (kd, kh, kw) = (win[0].len(), win[1].len(), win[2].len());
    let (od, oh, ow) = (d - kd + 1, h - kh + 1, w - kw + 1);
    let plane = oh * ow;
    // ring[m][slot]: in-plane filtered map m (x, y, xx, yy, xy) of input slice `slot mod kd`
    let mut ring = vec![vec![0.0f64; kd * plane]; 5];
    let mut row = vec![0.0f64; h * ow];
    let mut src = vec![0.0f64; h * w];
    let (mut ssim_sum, mut cs_sum) = (0.0f64, 0.0f64);
    let mut acc = vec![0.0f64; 5 * plane];
    for slice in 0..d {
        let xs = &x[slice * h * w..(slice + 1) * h * w];
        let ys = &y[slice * h * w..(slice + 1) * h * w];
        let slot = slice % kd;
        for (m, ring_m) in ring.iter_mut().enumerate() {
            for (i, v) in src.iter_mut().enumerate() {
                let (a, b) = (xs[i] as f64, ys[i] as f64);
                *v = match m {
                    0 => a,
                    1 => b,
                    2 => a * a,
                    3 => b * b,
                    _ => a * b,
                };
            }
            filter_plane(
                &src,
                [h, w],
                &win[1],
                &win[2],
                &mut row,
                &mut ring_m[slot * plane..(slot + 1) * plane],
            );
        }
        if slice + 1 < kd {
            continue;
        }
        // output depth index slice + 1 - kd uses input slices slice+1-kd ..= slice
        let first = slice + 1 - kd;
        acc.iter_mut().for_each(|v| *v = 0.0);
        for (t, &wt) in win[0].iter().enumerate() {
            let slot = (first + t) % kd;
            for m in 0..5 {
                let src = &ring[m][slot * plane..(slot + 1) * plane];
                let dst = &mut acc[m * plane..(m + 1) * plane];
                for (o, s) in dst.iter_mut().zip(src) {
                    *o += wt * s;
                }
            }
        }
        for i in 0..plane {
            let (mx, my) = (acc[i], acc[plane + i]);
            let sx = acc[2 * plane + i] - mx * mx;
            let sy = acc[3 * plane + i] - my * my;
            let sxy = acc[4 * plane + i] - mx * my;
            let cs = (2.0 * sxy + c2) / (sx + sy + c2);
            cs_sum += cs;
            ssim_sum += (2.0 * mx * my + c1) / (mx * mx + my * my + c1) * cs;
        }
    }
    (ssim_sum, cs_sum, od * plane)
}

/// Valid 2-D filtering of an `[h, w]` plane: along W with `ww`, then along H with `wh`.
fn filter_plane(
    src: &[f64],
    [h, w]: [usize; 2],
    wh: &[f64],
    ww: &[f64],
    row: &mut [f64],
    out: &mut [f64],
) {
    let ow = w - ww.len() + 1;
    let oh = h - wh.len() + 1;
    for r in 0..h {
        let line = &src[r * w..(r + 1) * w];
        for (o, v) in row[r * ow..(r + 1) * ow].iter_mut().enumerate() {
            *v = ww.iter().zip(&line[o..]).map(|(a, b)| a * b).sum();
        }
    }
    out.iter_mut().for_each(|v| *v = 0.0);
    for r in 0..oh {
        let dst = &mut out[r * ow..(r + 1) * ow];
        for (t, &wt) in wh.iter().enumerate() {
            let src = &row[(r + t) * ow..(r + t + 1) * ow];
            for (o, s) in dst.iter_mut().zip(src) {
                *o += wt * s;
            }
        }
    }
}

/// `SSIMMetric` for one batch item.
pub fn ssim(x: &Volume, y: &Volume, p: &SsimParams) -> Result<f64, MetricError> {
    Ok(ssim_and_cs(x, y, p)?.ssim)
}

/// MONAI's size rule for MS-SSIM: every spatial extent `// (len(weights)-1)^2` (at least 1)
/// must exceed `kernel_size - 1`.
pub fn check_ms_ssim_size(
    spatial: [usize; 3],
    p: &SsimParams,
    weights: &[f64],
) -> Result<(), MetricError> {
    if weights.is_empty() {
        return Err(MetricError::Parameter(
            "MS-SSIM needs at least one weight".into(),
        ));
    }
    let div = (weights.len() - 1).max(1).pow(2);
    for (extent, &k) in spatial.iter().zip(&p.kernel_size) {
        if extent / div <= k.saturating_sub(1) {
            return Err(MetricError::TooSmallForScales {
                weights: weights.len(),
                kernel_size: k,
                minimum: k.saturating_sub(1) * div,
            });
        }
    }
    Ok(())
}

/// MS-SSIM and, from its first scale, SSIM with the same window (one pass serves both).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MsSsim {
    pub ms_ssim: f64,
    /// SSIM at full resolution with the MS-SSIM window.
    pub ssim: f64,
}

/// `MultiScaleSSIMMetric` for one batch item (with `weights`, MONAI's default
/// [`MS_SSIM_WEIGHTS`]), plus the full-resolution SSIM it computes on the way.
pub fn ms_ssim(
    x: &Volume,
    y: &Volume,
    p: &SsimParams,
    weights: &[f64],
) -> Result<MsSsim, MetricError> {
    same_shape(x, y)?;
    p.check()?;
    let [_, d, h, w] = x.shape;
    check_ms_ssim_size([d, h, w], p, weights)?;
    let mut values = Vec::with_capacity(weights.len());
    let mut full_ssim = None;
    let mut last_ssim = 0.0;
    let (mut xs, mut ys, mut shape) = (x.data.to_vec(), y.data.to_vec(), x.shape);
    for scale in 0..weights.len() {
        if scale > 0 {
            let (px, pooled) = avg_pool2(&xs, shape);
            ys = avg_pool2(&ys, shape).0;
            xs = px;
            shape = pooled;
        }
        let r = ssim_and_cs(&Volume::new(shape, &xs)?, &Volume::new(shape, &ys)?, p)?;
        full_ssim.get_or_insert(r.ssim);
        values.push(r.cs.max(0.0));
        last_ssim = r.ssim;
    }
    if let Some(v) = values.last_mut() {
        *v = last_ssim.max(0.0);
    }
    let ms = values
        .iter()
        .zip(weights)
        .map(|(v, wt)| v.powf(*wt))
        .product();
    Ok(MsSsim {
        ms_ssim: ms,
        ssim: full_ssim.unwrap_or(last_ssim),
    })
}

/// `avg_pool3d(kernel_size=2)`: means of 2x2x2 blocks, extents floored; float32 result.
/// `shape` is the input's; an odd extent's last plane is dropped.
fn avg_pool2(data: &[f32], shape: [usize; 4]) -> (Vec<f32>, [usize; 4]) {
    let [c, d, h, w] = shape;
    let (pd, ph, pw) = (d / 2, h / 2, w / 2);
    let mut out = Vec::with_capacity(c * pd * ph * pw);
    for ch in 0..c {
        let v = &data[ch * d * h * w..(ch + 1) * d * h * w];
        for i in 0..pd {
            for j in 0..ph {
                for k in 0..pw {
                    let mut s = 0.0f64;
                    for a in 0..2 {
                        for b in 0..2 {
                            let base = (2 * i + a) * h * w + (2 * j + b) * w + 2 * k;
                            s += v[base] as f64 + v[base + 1] as f64;
                        }
                    }
                    out.push((s / 8.0) as f32);
                }
            }
        }
    }
    (out, [c, pd, ph, pw])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_volumes_score_one() {
        let data: Vec<f32> = (0..2 * 12 * 13 * 14)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect();
        let v = Volume::new([2, 12, 13, 14], &data).unwrap();
        let r = ssim_and_cs(&v, &v, &SsimParams::default()).unwrap();
        assert!(
            (r.ssim - 1.0).abs() < 1e-12 && (r.cs - 1.0).abs() < 1e-12,
            "{r:?}"
        );
    }

    #[test]
    fn gaussian_window_is_normalised_and_symmetric() {
        let g = gaussian_1d(11, 1.5);
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        assert!((g[0] - g[10]).abs() < 1e-9 && g[5] > g[4]);
    }

    #[test]
    fn pooling_floors_odd_extents() {
        let data: Vec<f32> = (0..3 * 5 * 4).map(|i| i as f32).collect();
        let (p, s) = avg_pool2(&data, [1, 3, 5, 4]);
        assert_eq!(s, [1, 1, 2, 2]);
        // block (0..2, 0..2, 0..2): indices 0,1,4,5,20,21,24,25 -> mean 12.5
        assert_eq!(p[0], 12.5);
    }

    #[test]
    fn bundle_shape_needs_kernel_at_most_7_for_five_scales() {
        let mut p = SsimParams::default();
        let e = check_ms_ssim_size([144, 176, 112], &p, &MS_SSIM_WEIGHTS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "For a given number of `weights` parameters 5 and kernel size 11, the image height must be larger than 160."
        );
        p.kernel_size = [7; 3];
        check_ms_ssim_size([144, 176, 112], &p, &MS_SSIM_WEIGHTS).unwrap();
        p.kernel_size = [8; 3];
        assert!(check_ms_ssim_size([144, 176, 112], &p, &MS_SSIM_WEIGHTS).is_err());
    }
}
