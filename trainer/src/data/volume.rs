//! `Volume`: one 3-D float32 scalar image in C order (x slowest, z fastest — the (D, H, W) layout
//! the networks use) with its voxel-to-world affine, plus summary statistics.

use super::affine::Affine;

/// A 3-D image: `data[(x * ny + y) * nz + z]`, world = affine * [x, y, z, 1] (RAS+ millimetres).
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub dims: [usize; 3],
    pub data: Vec<f32>,
    pub affine: Affine,
}

/// Summary statistics of a volume (computed in f64).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VolumeStats {
    pub min: f32,
    pub max: f32,
    pub mean: f64,
    pub std: f64,
}

impl Volume {
    /// A volume from its parts; `None` when `data.len()` does not equal the product of `dims`.
    pub fn new(dims: [usize; 3], data: Vec<f32>, affine: Affine) -> Option<Volume> {
        let n = dims[0].checked_mul(dims[1])?.checked_mul(dims[2])?;
        (n == data.len()).then_some(Volume { dims, data, affine })
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the volume has no voxels.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Linear index of voxel (x, y, z).
    #[inline]
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        (x * self.dims[1] + y) * self.dims[2] + z
    }

    /// Value at voxel (x, y, z).
    #[inline]
    pub fn at(&self, x: usize, y: usize, z: usize) -> f32 {
        self.data[self.index(x, y, z)]
    }

    /// Voxel sizes in millimetres (column norms of the affine).
    pub fn spacing(&self) -> [f64; 3] {
        super::affine::spacing(&self.affine)
    }

    /// Min, max, mean and (population) standard deviation.
    pub fn stats(&self) -> VolumeStats {
        stats(&self.data)
    }
}

/// Min, max, mean and population standard deviation of a slice (zeros for an empty slice).
pub fn stats(data: &[f32]) -> VolumeStats {
    if data.is_empty() {
        return VolumeStats {
            min: 0.0,
            max: 0.0,
            mean: 0.0,
            std: 0.0,
        };
    }
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    let mut sum = 0.0f64;
    for &v in data {
        min = min.min(v);
        max = max.max(v);
        sum += v as f64;
    }
    let mean = sum / data.len() as f64;
    let var = data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / data.len() as f64;
    VolumeStats {
        min,
        max,
        mean,
        std: var.sqrt(),
    }
}

/// numpy's default (linear) percentile, `q` in [0, 100]; sorts a copy with a selection algorithm.
pub fn percentile(data: &[f32], q: f64) -> Option<f64> {
    percentiles(data, &[q]).map(|v| v[0])
}

/// Several numpy-style linear percentiles at once (one copy of the data).
pub fn percentiles(data: &[f32], qs: &[f64]) -> Option<Vec<f64>> {
    if data.is_empty() || qs.iter().any(|q| !(0.0..=100.0).contains(q)) {
        return None;
    }
    let mut v = data.to_vec();
    let n = v.len();
    let mut out = Vec::with_capacity(qs.len());
    for &q in qs {
        let pos = q / 100.0 * (n - 1) as f64;
        let lo = pos.floor() as usize;
        let frac = pos - lo as f64;
        let (_, a, rest) = v.select_nth_unstable_by(lo, |a, b| a.total_cmp(b));
        let a = *a as f64;
        let value = if frac > 0.0 && !rest.is_empty() {
            let b = rest.iter().copied().fold(f32::INFINITY, f32::min) as f64;
            a + (b - a) * frac
        } else {
            a
        };
        out.push(value);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        let d: Vec<f32> = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&d, 0.0), Some(1.0));
        assert_eq!(percentile(&d, 100.0), Some(5.0));
        assert_eq!(percentile(&d, 50.0), Some(3.0));
        // numpy.percentile([1,2,3,4,5], 99.5) = 4.98
        assert!((percentile(&d, 99.5).unwrap() - 4.98).abs() < 1e-12);
        assert!((percentile(&d, 10.0).unwrap() - 1.4).abs() < 1e-12);
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&d, 101.0), None);
    }
}
