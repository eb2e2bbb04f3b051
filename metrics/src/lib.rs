//! ldm-metrics: the image-quality and distribution metrics of brats-ldm, computed as MONAI 1.5's
//! metrics compute them (checked against MONAI's outputs in `tests/monai_metrics.rs`):
//! - `ssim`: `SSIMMetric` and `MultiScaleSSIMMetric` in 3-D (Gaussian or uniform window, valid
//!   convolution, MONAI's kernel-size limits for MS-SSIM);
//! - `regression`: MSE, L1 (MAE) and PSNR as `MSEMetric`, `MAEMetric`, `PSNRMetric`;
//! - `mmd`: `MMDMetric` (linear kernel, unbiased estimate) over feature rows;
//! - `fid`: `FIDMetric`'s Frechet distance over feature rows (the features come from elsewhere:
//!   no feature network ships with this crate);
//! - `histogram`: fixed-range intensity histograms, the features `brats-ldm evaluate` feeds to MMD;
//! - `symmetric`: the symmetric eigensolver FID needs;
//! - `pairs`: a metric over every pair of one or two sets of volumes, loaded block by block on
//!   scoped threads (the diversity and real-vs-sample means of `evaluate`).
//!
//! Volumes are one batch item, C-order `[C, D, H, W]` float32 (`Volume`); batch reductions are the
//! caller's (MONAI's `reduction="mean"` is the mean of the per-item values). Sums run in f64.

pub mod fid;
pub mod histogram;
pub mod mmd;
pub mod pairs;
pub mod regression;
pub mod ssim;
pub mod symmetric;

/// One batch item: a C-order `[C, D, H, W]` float32 volume.
#[derive(Debug, Clone, Copy)]
pub struct Volume<'a> {
    pub shape: [usize; 4],
    pub data: &'a [f32],
}

impl<'a> Volume<'a> {
    /// Checks that `data` holds `shape`'s voxels and that no size is zero.
    pub fn new(shape: [usize; 4], data: &'a [f32]) -> Result<Self, MetricError> {
        let n = shape.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
        if shape.contains(&0) || n != Some(data.len()) {
            return Err(MetricError::Shape(format!(
                "shape {shape:?} does not describe {} values",
                data.len()
            )));
        }
        Ok(Volume { shape, data })
    }

    /// Voxels of one channel.
    pub fn spatial_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// Channel `c` as a `[D, H, W]` slice.
    pub fn channel(&self, c: usize) -> &'a [f32] {
        let n = self.spatial_len();
        &self.data[c * n..(c + 1) * n]
    }
}

/// Why a metric cannot be computed; the messages say which input is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("{0}")]
    Shape(String),
    #[error("{0}")]
    Parameter(String),
    /// MONAI's own message when MS-SSIM's last scale would be smaller than the kernel.
    #[error("For a given number of `weights` parameters {weights} and kernel size {kernel_size}, the image height must be larger than {minimum}.")]
    TooSmallForScales {
        weights: usize,
        kernel_size: usize,
        minimum: usize,
    },
    #[error("{0}")]
    Samples(String),
}

/// Two volumes to compare must have one shape (MONAI: "y_pred and y shapes dont match").
pub(crate) fn same_shape(a: &Volume, b: &Volume) -> Result<(), MetricError> {
    if a.shape != b.shape {
        return Err(MetricError::Shape(format!(
            "the two volumes have different shapes {:?} and {:?}",
            a.shape, b.shape
        )));
    }
    Ok(())
}
