//! The 4x4 voxel-to-world affine type of NIfTI I/O and the few operations the reader and writer
//! need (identity, inverse for the singularity check, voxel sizes); the trainer's affine algebra
//! (reorientation, zoom) builds on these.

/// A homogeneous 4x4 affine, row-major: world = A * [i, j, k, 1].
pub type Affine = [[f64; 4]; 4];

/// The identity affine.
pub fn identity() -> Affine {
    let mut a = [[0.0; 4]; 4];
    for (i, row) in a.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    a
}

/// Inverse by Gauss-Jordan elimination with partial pivoting; `None` when singular.
pub fn inverse(a: &Affine) -> Option<Affine> {
    let mut m = *a;
    let mut inv = identity();
    let scale = a.iter().flatten().fold(0.0f64, |s, v| s.max(v.abs()));
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    for col in 0..4 {
        let pivot = (col..4).max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs()))?;
        if m[pivot][col].abs() <= scale * 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        inv.swap(col, pivot);
        let p = m[col][col];
        for j in 0..4 {
            m[col][j] /= p;
            inv[col][j] /= p;
        }
        for r in 0..4 {
            if r != col {
                let f = m[r][col];
                if f != 0.0 {
                    for j in 0..4 {
                        m[r][j] -= f * m[col][j];
                        inv[r][j] -= f * inv[col][j];
                    }
                }
            }
        }
    }
    Some(inv)
}

/// Voxel sizes: the Euclidean norm of each of the first three columns (MONAI `affine_to_spacing`).
pub fn spacing(a: &Affine) -> [f64; 3] {
    let mut s = [0.0; 3];
    for (j, sj) in s.iter_mut().enumerate() {
        *sj = (0..3).map(|i| a[i][j] * a[i][j]).sum::<f64>().sqrt();
    }
    s
}
