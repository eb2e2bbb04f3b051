//! 4x4 voxel-to-world affine algebra in f64: products, inverses, nibabel's `io_orientation`
//! and MONAI's `zoom_affine` (rotation kept, zooms replaced) used by reorientation and resampling.

pub use ldm_io::affine::{identity, inverse, spacing, Affine};

/// Matrix product a * b.
pub fn matmul(a: &Affine, b: &Affine) -> Affine {
    let mut c = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            c[i][j] = (0..4).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    c
}

/// Apply an affine to a point.
pub fn apply(a: &Affine, p: [f64; 3]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (i, o) in out.iter_mut().enumerate() {
        *o = a[i][0] * p[0] + a[i][1] * p[1] + a[i][2] * p[2] + a[i][3];
    }
    out
}

fn mat3(a: &Affine) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            m[i][j] = a[i][j];
        }
    }
    m
}

fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

fn inv3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let d = det3(m);
    if !d.is_finite() || d.abs() < 1e-300 {
        return None;
    }
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            // cofactor of (j, i) for the adjugate
            let (a0, a1) = ((j + 1) % 3, (j + 2) % 3);
            let (b0, b1) = ((i + 1) % 3, (i + 2) % 3);
            r[i][j] = (m[a0][b0] * m[a1][b1] - m[a0][b1] * m[a1][b0]) / d;
        }
    }
    Some(r)
}

/// nibabel's `io_orientation`: for each voxel axis, the world axis (0=R, 1=A, 2=S) it points
/// along most closely and the sign (+1 towards R/A/S, -1 away). The nearest orthogonal matrix to
/// the direction cosines is found by polar decomposition, then axes are assigned greedily in order.
pub fn io_orientation(a: &Affine) -> Result<[(usize, i8); 3], String> {
    let mut rs = mat3(a);
    let zooms = spacing(a);
    for j in 0..3 {
        let z = if zooms[j] == 0.0 { 1.0 } else { zooms[j] };
        for row in rs.iter_mut() {
            row[j] /= z;
        }
    }
    // Newton iteration for the orthogonal polar factor: X <- (X + X^-T) / 2.
    let mut x = rs;
    for _ in 0..100 {
        let xi = inv3(&x).ok_or_else(|| "direction cosines are singular (an axis has no extent)".to_string())?;
        let mut next = [[0.0; 3]; 3];
        let mut delta = 0.0f64;
        for i in 0..3 {
            for j in 0..3 {
                next[i][j] = 0.5 * (x[i][j] + xi[j][i]);
                delta = delta.max((next[i][j] - x[i][j]).abs());
            }
        }
        x = next;
        if delta < 1e-15 {
            break;
        }
    }
    let mut out = [(0usize, 1i8); 3];
    let mut used = [false; 3];
    for in_ax in 0..3 {
        let mut best: Option<usize> = None;
        for out_ax in 0..3 {
            if used[out_ax] {
                continue;
            }
            if best.map_or(true, |b| x[out_ax][in_ax].abs() > x[b][in_ax].abs()) {
                best = Some(out_ax);
            }
        }
        let b = best.ok_or_else(|| "could not assign voxel axes to world axes".to_string())?;
        if x[b][in_ax].abs() < 1e-8 {
            return Err(format!("voxel axis {in_ax} has no direction"));
        }
        used[b] = true;
        out[in_ax] = (b, if x[b][in_ax] < 0.0 { -1 } else { 1 });
    }
    Ok(out)
}

/// MONAI `zoom_affine(affine, pixdim, diagonal=False)`: keep the rotation (from a Cholesky
/// factorisation of the 3x3 part), replace the zooms by `pixdim` (a 0 keeps the old zoom),
/// translation zero (the caller sets the origin).
pub fn zoom_affine(a: &Affine, pixdim: [f64; 3]) -> Result<Affine, String> {
    let rzs = mat3(a);
    // g = rzs^T rzs, g = L L^T, zs = L^T (upper triangular with positive diagonal)
    let mut g = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            g[i][j] = (0..3).map(|k| rzs[k][i] * rzs[k][j]).sum();
        }
    }
    let mut l = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..=i {
            let s: f64 = g[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if !(s > 0.0) {
                    return Err("the 3x3 part is not positive definite (degenerate axes)".into());
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    let mut zs = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            zs[i][j] = l[j][i];
        }
    }
    let zs_inv = inv3(&zs).ok_or_else(|| "zoom matrix is singular".to_string())?;
    let old = spacing(a);
    let mut out = identity();
    for i in 0..3 {
        for j in 0..3 {
            let rot: f64 = (0..3).map(|k| rzs[i][k] * zs_inv[k][j]).sum();
            let p = if pixdim[j] == 0.0 { old[j] } else { pixdim[j] };
            let s = zs[j][j].signum() * p.abs();
            out[i][j] = rot * s;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_roundtrip() {
        let a: Affine = [
            [0.0, -2.0, 0.1, 5.0],
            [1.5, 0.0, 0.0, -3.0],
            [0.0, 0.2, 3.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let p = matmul(&a, &inverse(&a).unwrap());
        for i in 0..4 {
            for j in 0..4 {
                assert!((p[i][j] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(inverse(&[[0.0; 4]; 4]).is_none());
    }

    #[test]
    fn orientation_of_las_and_permuted() {
        let las: Affine = [
            [-2.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(io_orientation(&las).unwrap(), [(0, -1), (1, 1), (2, 1)]);
        // voxel axis 0 -> S, axis 1 -> -R (with a small rotation), axis 2 -> A
        let p: Affine = [
            [0.0, -1.0, 0.05, 0.0],
            [0.0, 0.02, 1.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(io_orientation(&p).unwrap(), [(2, 1), (0, -1), (1, 1)]);
    }

    #[test]
    fn zoom_affine_keeps_rotation() {
        let c = 0.8f64;
        let s = 0.6f64;
        let a: Affine = [
            [2.0 * c, -3.0 * s, 0.0, 1.0],
            [2.0 * s, 3.0 * c, 0.0, 2.0],
            [0.0, 0.0, 4.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let z = zoom_affine(&a, [1.1, 1.1, 1.1]).unwrap();
        let want = [[1.1 * c, -1.1 * s, 0.0], [1.1 * s, 1.1 * c, 0.0], [0.0, 0.0, 1.1]];
        for i in 0..3 {
            for j in 0..3 {
                assert!((z[i][j] - want[i][j]).abs() < 1e-12, "{z:?}");
            }
            assert_eq!(z[i][3], 0.0);
        }
    }
}
