//! Intensity histograms as feature rows: `bins` equal bins over `[lo, hi]`, values below or
//! above counted in the first or last bin, counts divided by the number of voxels (so volumes
//! of different sizes compare). `brats-ldm evaluate` compares the real and generated sets'
//! histograms with MMD.

use crate::MetricError;

/// A fixed binning shared by every volume of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Binning {
    pub bins: usize,
    pub lo: f64,
    pub hi: f64,
}

impl Binning {
    pub fn new(bins: usize, lo: f64, hi: f64) -> Result<Self, MetricError> {
        if bins == 0 || !(lo.is_finite() && hi.is_finite() && hi > lo) {
            return Err(MetricError::Parameter(format!(
                "a histogram needs at least one bin and a finite range lo < hi (got {bins} bins over [{lo}, {hi}])"
            )));
        }
        Ok(Binning { bins, lo, hi })
    }

    /// The normalised histogram of `values` (empty input: all zeros).
    pub fn histogram(&self, values: &[f32]) -> Vec<f32> {
        let mut counts = vec![0u64; self.bins];
        let scale = self.bins as f64 / (self.hi - self.lo);
        for &v in values {
            let at = ((v as f64 - self.lo) * scale).floor();
            let bin = if at.is_nan() || at < 0.0 {
                0
            } else {
                (at as usize).min(self.bins - 1)
            };
            counts[bin] += 1;
        }
        let n = values.len().max(1) as f64;
        counts.iter().map(|&c| (c as f64 / n) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_and_clamping() {
        let b = Binning::new(4, 0.0, 1.0).unwrap();
        let h = b.histogram(&[-1.0, 0.1, 0.3, 0.6, 0.99, 1.0, 5.0, 0.26]);
        assert_eq!(h, vec![0.25, 0.25, 0.125, 0.375]);
        assert!(Binning::new(0, 0.0, 1.0).is_err() && Binning::new(3, 1.0, 1.0).is_err());
    }
}
