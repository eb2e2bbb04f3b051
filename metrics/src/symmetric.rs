//! Eigen-decomposition of a real symmetric matrix by cyclic Jacobi rotations (f64): accurate to
//! rounding for the covariance matrices FID needs. Cost is about `10 n^3` flops per sweep and a
//! handful of sweeps: well under a second for n = 512, tens of seconds for n = 2048.

/// A square matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub n: usize,
    pub a: Vec<f64>,
}

impl Matrix {
    pub fn zeros(n: usize) -> Self {
        Matrix {
            n,
            a: vec![0.0; n * n],
        }
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.n + j]
    }

    pub fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.at(i, i)).sum()
    }

    /// `self * other`.
    pub fn mul(&self, other: &Matrix) -> Matrix {
        let n = self.n;
        let mut out = Matrix::zeros(n);
        for i in 0..n {
            for k in 0..n {
                let v = self.a[i * n + k];
                if v == 0.0 {
                    continue;
                }
                let (src, dst) = (&other.a[k * n..(k + 1) * n], &mut out.a[i * n..(i + 1) * n]);
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += v * s;
                }
            }
        }
        out
    }
}

/// Eigenvalues and eigenvectors (the columns of `vectors`) of a symmetric matrix.
pub struct Eigen {
    pub values: Vec<f64>,
    pub vectors: Matrix,
}

/// Jacobi eigen-decomposition of the symmetric matrix `m` (only symmetric input is meaningful).
pub fn eigen(m: &Matrix) -> Eigen {
    let n = m.n;
    let mut a = m.a.clone();
    let mut v = Matrix::zeros(n);
    for i in 0..n {
        v.a[i * n + i] = 1.0;
    }
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..64 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * norm || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- J^T A J with J the rotation in the (p, q) plane
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v.a[k * n + p], v.a[k * n + q]);
                    v.a[k * n + p] = c * vkp - s * vkq;
                    v.a[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    Eigen {
        values: (0..n).map(|i| a[i * n + i]).collect(),
        vectors: v,
    }
}

/// The symmetric square root of a positive semi-definite matrix (negative rounding-level
/// eigenvalues taken as zero).
pub fn sqrt_psd(m: &Matrix) -> Matrix {
    let e = eigen(m);
    let n = m.n;
    let mut out = Matrix::zeros(n);
    for k in 0..n {
        let s = e.values[k].max(0.0).sqrt();
        if s == 0.0 {
            continue;
        }
        for i in 0..n {
            let vik = e.vectors.at(i, k) * s;
            for j in 0..n {
                out.a[i * n + j] += vik * e.vectors.at(j, k);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconstructs_a_symmetric_matrix() {
        let n = 7;
        let mut m = Matrix::zeros(n);
        for i in 0..n {
            for j in 0..n {
                m.a[i * n + j] =
                    ((i * 3 + j * 3 + i * j) % 11) as f64 - 5.0 + if i == j { 3.0 } else { 0.0 };
            }
        }
        let e = eigen(&m);
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n)
                    .map(|k| e.vectors.at(i, k) * e.values[k] * e.vectors.at(j, k))
                    .sum();
                assert!(
                    (r - m.at(i, j)).abs() < 1e-10,
                    "{i},{j}: {r} vs {}",
                    m.at(i, j)
                );
            }
        }
    }

    #[test]
    fn square_root_squares_back() {
        let m = Matrix {
            n: 2,
            a: vec![4.0, 1.0, 1.0, 3.0],
        };
        let r = sqrt_psd(&m);
        let back = r.mul(&r);
        for (a, b) in back.a.iter().zip(&m.a) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
