//! Geometry of the volumes we write: three-letter orientation codes (which world direction each
//! array axis increases towards, RAS+ as NIfTI), the voxel-to-world affine with the volume's centre
//! voxel at world (0, 0, 0) mm, and the one quaternion code of this crate (`nifti_mat44_to_quatern`)
//! that every NIfTI header we write uses for its qform.

/// Maximum description length: 80 bytes including the terminating NUL.
pub const DESCRIP_MAX: usize = 79;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GeometryError {
    #[error("orientation code '{0}' must be three letters, one of R/L, one of A/P and one of S/I (e.g. RAS, LPS)")]
    Orientation(String),
    #[error("voxel spacing {0:?} mm must be finite and positive")]
    Spacing([f32; 3]),
    #[error(
        "volume shape {0:?} must be [C, D, H, W] with every size at least 1 and at most 32767"
    )]
    Shape([usize; 4]),
    #[error("NIfTI description '{0}' is longer than {DESCRIP_MAX} bytes")]
    Description(String),
    #[error("image of {dims:?} voxels x {channels} channel(s): every size must be at least 1 and at most 32767")]
    Dims { dims: [usize; 3], channels: usize },
    #[error("affine {0:?} must be finite with no zero-length column")]
    Affine([[f64; 4]; 3]),
}

/// World axis (0 = x/R-L, 1 = y/A-P, 2 = z/S-I) and direction (+1 towards R/A/S) of one letter.
fn letter_axis(c: char) -> Option<(usize, f64)> {
    match c.to_ascii_uppercase() {
        'R' => Some((0, 1.0)),
        'L' => Some((0, -1.0)),
        'A' => Some((1, 1.0)),
        'P' => Some((1, -1.0)),
        'S' => Some((2, 1.0)),
        'I' => Some((2, -1.0)),
        _ => None,
    }
}

/// Signed permutation matrix `R[world][array axis]` of an orientation code.
pub fn orientation_matrix(code: &str) -> Result<[[f64; 3]; 3], GeometryError> {
    let letters: Vec<char> = code.chars().collect();
    if letters.len() != 3 {
        return Err(GeometryError::Orientation(code.to_string()));
    }
    let mut r = [[0.0f64; 3]; 3];
    let mut used = [false; 3];
    for (a, &c) in letters.iter().enumerate() {
        let (w, sign) =
            letter_axis(c).ok_or_else(|| GeometryError::Orientation(code.to_string()))?;
        if used[w] {
            return Err(GeometryError::Orientation(code.to_string()));
        }
        used[w] = true;
        r[w][a] = sign;
    }
    Ok(r)
}

/// The voxel-to-world affine (3 rows of 4) for an array of spatial size `dims` (i, j, k).
pub fn affine(
    code: &str,
    spacing: [f32; 3],
    dims: [usize; 3],
) -> Result<[[f64; 4]; 3], GeometryError> {
    if spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(GeometryError::Spacing(spacing));
    }
    let r = orientation_matrix(code)?;
    let mut m = [[0.0f64; 4]; 3];
    for w in 0..3 {
        let mut offset = 0.0;
        for a in 0..3 {
            m[w][a] = r[w][a] * spacing[a] as f64;
            offset -= m[w][a] * (dims[a] as f64 - 1.0) / 2.0;
        }
        m[w][3] = offset;
    }
    Ok(m)
}

/// Quaternion (b, c, d), qfac and voxel sizes of the 3x3 part of any affine (rows of 3 or more):
/// the columns are divided by their lengths (the zooms), the resulting rotation-or-reflection
/// goes through `quaternion`. A zero column is taken as the matching identity column.
pub fn quaternion_of_affine(rows: [[f64; 4]; 3]) -> ([f64; 3], f64, [f64; 3]) {
    let mut zooms = [0.0f64; 3];
    for (j, z) in zooms.iter_mut().enumerate() {
        *z = (0..3).map(|i| rows[i][j] * rows[i][j]).sum::<f64>().sqrt();
    }
    let mut r = [[0.0f64; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = if zooms[j] > 0.0 {
                rows[i][j] / zooms[j]
            } else if i == j {
                1.0
            } else {
                0.0
            };
        }
    }
    let (q, qfac) = quaternion(r);
    (q, qfac, zooms)
}

/// Quaternion (b, c, d) and qfac of a rotation-or-reflection matrix, as `nifti_mat44_to_quatern`
/// defines them: a reflection is expressed by qfac = -1 and a flipped third column.
pub fn quaternion(r: [[f64; 3]; 3]) -> ([f64; 3], f64) {
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let mut r = r;
    let qfac = if det < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let (r11, r12, r13) = (r[0][0], r[0][1], r[0][2]);
    let (r21, r22, r23) = (r[1][0], r[1][1], r[1][2]);
    let (r31, r32, r33) = (r[2][0], r[2][1], r[2][2]);
    let trace = r11 + r22 + r33 + 1.0;
    let (mut a, mut b, mut c, mut d);
    if trace > 0.5 {
        a = 0.5 * trace.sqrt();
        b = 0.25 * (r32 - r23) / a;
        c = 0.25 * (r13 - r31) / a;
        d = 0.25 * (r21 - r12) / a;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r12 + r21) / b;
            d = 0.25 * (r13 + r31) / b;
            a = 0.25 * (r32 - r23) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r12 + r21) / c;
            d = 0.25 * (r23 + r32) / c;
            a = 0.25 * (r13 - r31) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r13 + r31) / d;
            c = 0.25 * (r23 + r32) / d;
            a = 0.25 * (r21 - r12) / d;
        }
        if a < 0.0 {
            b = -b;
            c = -c;
            d = -d;
            a = -a;
        }
    }
    let _ = a;
    ([b, c, d], qfac)
}
