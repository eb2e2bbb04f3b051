//! Voxel-wise error metrics of one batch item as MONAI 1.5's regression metrics compute them:
//! `MSEMetric` and `MAEMetric` (the mean over every channel and voxel of `(y - y_pred)^2` and
//! `|y - y_pred|`) and `PSNRMetric` (`20 log10(max_val) - 10 log10(MSE)`). Sums run in f64.

use crate::{same_shape, MetricError, Volume};

fn mean_of(x: &Volume, y: &Volume, f: impl Fn(f64) -> f64) -> Result<f64, MetricError> {
    same_shape(x, y)?;
    let sum: f64 = x
        .data
        .iter()
        .zip(y.data)
        .map(|(a, b)| f(*b as f64 - *a as f64))
        .sum();
    Ok(sum / x.data.len() as f64)
}

/// `MSEMetric` for one batch item.
pub fn mse(y_pred: &Volume, y: &Volume) -> Result<f64, MetricError> {
    mean_of(y_pred, y, |e| e * e)
}

/// `MAEMetric` (the L1 error) for one batch item.
pub fn mae(y_pred: &Volume, y: &Volume) -> Result<f64, MetricError> {
    mean_of(y_pred, y, f64::abs)
}

/// `PSNRMetric(max_val)` for one batch item; infinite for identical volumes, as in MONAI.
pub fn psnr(y_pred: &Volume, y: &Volume, max_val: f64) -> Result<f64, MetricError> {
    if !(max_val.is_finite() && max_val > 0.0) {
        return Err(MetricError::Parameter(format!(
            "PSNR max value {max_val} must be positive"
        )));
    }
    Ok(20.0 * max_val.log10() - 10.0 * mse(y_pred, y)?.log10())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let a = [0.0f32, 1.0, 2.0, 3.0];
        let b = [0.0f32, 1.0, 2.0, 5.0];
        let (x, y) = (
            Volume::new([1, 1, 2, 2], &a).unwrap(),
            Volume::new([1, 1, 2, 2], &b).unwrap(),
        );
        assert_eq!(mse(&x, &y).unwrap(), 1.0);
        assert_eq!(mae(&x, &y).unwrap(), 0.5);
        assert!((psnr(&x, &y, 10.0).unwrap() - 20.0).abs() < 1e-12);
    }
}
