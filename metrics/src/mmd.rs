//! Maximum mean discrepancy as MONAI 1.5's `MMDMetric` computes it (`compute_mmd`, no
//! `y_mapping`): each sample flattened to a row, the linear kernel `k(a, b) = a . b`, and the
//! unbiased estimate
//! `MMD^2 = sum_{i!=j} k(y_i, y_j) / (m(m-1)) + sum_{i!=j} k(p_i, p_j) / (n(n-1)) - 2 sum_{i,j} k(p_i, y_j) / (m n)`.
//! MONAI requires both sets to have one shape (so m == n); the estimate itself is defined for
//! any m, n >= 2 and this function accepts that, equal to MONAI's value when m == n.

use crate::MetricError;

/// Feature rows: `rows` samples of `dim` values each, C order.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub rows: usize,
    pub dim: usize,
    pub data: &'a [f32],
}

impl<'a> Rows<'a> {
    pub fn new(rows: usize, dim: usize, data: &'a [f32]) -> Result<Self, MetricError> {
        if rows.checked_mul(dim) != Some(data.len()) || dim == 0 {
            return Err(MetricError::Shape(format!(
                "{} values are not {rows} rows of {dim}",
                data.len()
            )));
        }
        Ok(Rows { rows, dim, data })
    }

    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Sum of `k(a_i, b_j)` over all pairs, leaving out `i == j` when `skip_diagonal`.
fn kernel_sum(a: &Rows, b: &Rows, skip_diagonal: bool) -> f64 {
    let mut s = 0.0;
    for i in 0..a.rows {
        for j in 0..b.rows {
            if !(skip_diagonal && i == j) {
                s += dot(a.row(i), b.row(j));
            }
        }
    }
    s
}

/// `MMDMetric()(y, y_pred)`: `y` the reference rows, `y_pred` the other set.
pub fn mmd(y: &Rows, y_pred: &Rows) -> Result<f64, MetricError> {
    if y.rows < 2 || y_pred.rows < 2 {
        return Err(MetricError::Samples(
            "MMD metric requires at least two samples in y and y_pred.".into(),
        ));
    }
    if y.dim != y_pred.dim {
        return Err(MetricError::Shape(format!(
            "MMD needs features of one length, got {} and {}",
            y.dim, y_pred.dim
        )));
    }
    let (m, n) = (y.rows as f64, y_pred.rows as f64);
    let a = kernel_sum(y, y, true);
    let b = kernel_sum(y_pred, y_pred, true);
    let c = kernel_sum(y_pred, y, false);
    Ok(a / (m * (m - 1.0)) + b / (n * (n - 1.0)) - 2.0 * c / (m * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_rows_have_negative_small_mmd_and_shift_grows_it() {
        let a = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
        let b = [2.0f32, 0.0, 0.0, 2.0, 2.0, 2.0];
        let (ya, yb) = (Rows::new(3, 2, &a).unwrap(), Rows::new(3, 2, &b).unwrap());
        let same = mmd(&ya, &ya).unwrap();
        let shifted = mmd(&ya, &yb).unwrap();
        assert!(shifted > same, "{same} {shifted}");
        assert!(mmd(&Rows::new(1, 2, &a[..2]).unwrap(), &ya).is_err());
    }
}
