//! The Frechet distance of MONAI 1.5's `FIDMetric` (`get_fid_score`) between two sets of
//! feature vectors: per set the mean and the covariance (`1/(N-1)`, variables in columns), then
//! `|mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr(sqrtm(S_1 S_2))`, in f64. MONAI takes
//! `sqrtm(S_1 S_2)` with scipy; for the covariance matrices here (symmetric positive
//! semi-definite) `tr(sqrtm(S_1 S_2))` equals the sum of the square roots of the eigenvalues of
//! `sqrt(S_1) S_2 sqrt(S_1)`, which is what this computes (eigenvalues below zero by rounding
//! count as zero). The features themselves must come from a feature network; none ships here.

use crate::mmd::Rows;
use crate::symmetric::{eigen, sqrt_psd, Matrix};
use crate::MetricError;

fn mean_and_cov(x: &Rows) -> (Vec<f64>, Matrix) {
    let (n, f) = (x.rows, x.dim);
    let mut mu = vec![0.0f64; f];
    for i in 0..n {
        for (m, v) in mu.iter_mut().zip(x.row(i)) {
            *m += *v as f64;
        }
    }
    mu.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = Matrix::zeros(f);
    let mut centred = vec![0.0f64; f];
    for i in 0..n {
        for ((c, v), m) in centred.iter_mut().zip(x.row(i)).zip(&mu) {
            *c = *v as f64 - m;
        }
        for a in 0..f {
            let ca = centred[a];
            let row = &mut cov.a[a * f..(a + 1) * f];
            for (r, cb) in row.iter_mut().zip(&centred) {
                *r += ca * cb;
            }
        }
    }
    let factor = 1.0 / (n as f64 - 1.0);
    cov.a.iter_mut().for_each(|v| *v *= factor);
    (mu, cov)
}

/// `FIDMetric()(y_pred, y)`: the Frechet distance between the feature rows of generated
/// (`y_pred`) and real (`y`) samples.
pub fn fid(y_pred: &Rows, y: &Rows) -> Result<f64, MetricError> {
    if y_pred.rows < 2 || y.rows < 2 {
        return Err(MetricError::Samples(
            "FID needs at least two feature vectors in each set (a covariance)".into(),
        ));
    }
    if y_pred.dim != y.dim {
        return Err(MetricError::Shape(format!(
            "FID needs features of one length, got {} and {}",
            y_pred.dim, y.dim
        )));
    }
    let (mu_p, s_p) = mean_and_cov(y_pred);
    let (mu_y, s_y) = mean_and_cov(y);
    let diff: f64 = mu_p.iter().zip(&mu_y).map(|(a, b)| (a - b) * (a - b)).sum();
    let root = sqrt_psd(&s_p);
    let inner = root.mul(&s_y).mul(&root);
    // symmetrise the rounding before the eigen-decomposition
    let n = inner.n;
    let mut sym = Matrix::zeros(n);
    for i in 0..n {
        for j in 0..n {
            sym.a[i * n + j] = 0.5 * (inner.at(i, j) + inner.at(j, i));
        }
    }
    let tr_covmean: f64 = eigen(&sym).values.iter().map(|v| v.max(0.0).sqrt()).sum();
    Ok(diff + s_p.trace() + s_y.trace() - 2.0 * tr_covmean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_sets_are_zero_and_a_shift_adds_its_square() {
        let a: Vec<f32> = (0..5 * 3)
            .map(|i| ((i * 7) % 5) as f32 + (i % 3) as f32 * 0.5)
            .collect();
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i % 3 == 0 { 2.0 } else { 0.0 })
            .collect();
        let (ra, rb) = (Rows::new(5, 3, &a).unwrap(), Rows::new(5, 3, &b).unwrap());
        assert!(fid(&ra, &ra).unwrap().abs() < 1e-9);
        assert!((fid(&ra, &rb).unwrap() - 4.0).abs() < 1e-9);
    }
}
