//! NIfTI-1 single-file output (`.nii`, `.nii.gz`): header construction from the model's output
//! geometry (voxel spacing + three-letter orientation code -> qform and sform), the data layout
//! transpose from our C-order `[C, D, H, W]` arrays to NIfTI's column-major voxel order, and a
//! small reader of our own headers used to decide whether an existing output is complete.
//!
//! Geometry conventions (documented for users in docs/batch-jobs.md):
//! - array axis D is NIfTI axis i, H is j, W is k (what MONAI/nibabel do with a channel-first
//!   `[C, X, Y, Z]` array); channels, when more than one, become the 4th dimension;
//! - orientation letters name the world direction each array axis increases towards, in the
//!   RAS+ world of NIfTI ("RAS": i -> Right, j -> Anterior, k -> Superior; "LPS" flips x and y);
//! - the volume's centre voxel sits at world (0, 0, 0) mm;
//! - qform and sform both carry this affine with code 2 (aligned anatomical), units mm,
//!   datatype float32, no intensity scaling.

use std::io::{Read, Write};

/// Size of the NIfTI-1 header proper.
pub const HEADER_BYTES: usize = 348;
/// Header + the 4-byte extension flag: voxel data starts here (`vox_offset`).
pub const DATA_OFFSET: usize = 352;
/// NIfTI datatype code of float32.
pub const DT_FLOAT32: i16 = 16;
/// `NIFTI_XFORM_ALIGNED_ANAT`: coordinates aligned to another file or to anatomical truth.
pub const XFORM_ALIGNED_ANAT: i16 = 2;
/// `NIFTI_UNITS_MM`.
pub const UNITS_MM: u8 = 2;
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

/// Everything that varies between our NIfTI headers.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeHeader {
    /// `[C, D, H, W]` of the array being written.
    pub shape: [usize; 4],
    pub spacing_mm: [f32; 3],
    pub orientation: String,
    /// Free text, at most 79 bytes: we store the seed, model checksum and sampler here.
    pub descrip: String,
}

impl VolumeHeader {
    fn validate(&self) -> Result<(), GeometryError> {
        if self.shape.iter().any(|&n| n == 0 || n > i16::MAX as usize) {
            return Err(GeometryError::Shape(self.shape));
        }
        if self.descrip.len() > DESCRIP_MAX {
            return Err(GeometryError::Description(self.descrip.clone()));
        }
        Ok(())
    }

    /// Number of voxels times channels.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Total bytes of the `.nii` file (uncompressed).
    pub fn file_bytes(&self) -> usize {
        DATA_OFFSET + 4 * self.len()
    }

    /// The 352 bytes that precede the voxel data: header plus an empty extension flag.
    pub fn to_bytes(&self) -> Result<[u8; DATA_OFFSET], GeometryError> {
        self.validate()?;
        let [c, d, h, w] = self.shape;
        let aff = affine(&self.orientation, self.spacing_mm, [d, h, w])?;
        let r = orientation_matrix(&self.orientation)?;
        let (q, qfac) = quaternion(r);

        let mut b = [0u8; DATA_OFFSET];
        put_i32(&mut b, 0, HEADER_BYTES as i32);
        b[38] = b'r'; // regular
        let ndim: i16 = if c > 1 { 4 } else { 3 };
        let dims: [i16; 8] = [ndim, d as i16, h as i16, w as i16, c as i16, 1, 1, 1];
        for (n, v) in dims.iter().enumerate() {
            put_i16(&mut b, 40 + 2 * n, *v);
        }
        put_i16(&mut b, 70, DT_FLOAT32);
        put_i16(&mut b, 72, 32); // bitpix
        let s = self.spacing_mm;
        let pixdim: [f32; 8] = [qfac as f32, s[0], s[1], s[2], 1.0, 1.0, 1.0, 1.0];
        for (n, v) in pixdim.iter().enumerate() {
            put_f32(&mut b, 76 + 4 * n, *v);
        }
        put_f32(&mut b, 108, DATA_OFFSET as f32); // vox_offset
        put_f32(&mut b, 112, 1.0); // scl_slope
        put_f32(&mut b, 116, 0.0); // scl_inter
        b[123] = UNITS_MM;
        b[148..148 + self.descrip.len()].copy_from_slice(self.descrip.as_bytes());
        put_i16(&mut b, 252, XFORM_ALIGNED_ANAT); // qform_code
        put_i16(&mut b, 254, XFORM_ALIGNED_ANAT); // sform_code
        for (n, v) in q.iter().enumerate() {
            put_f32(&mut b, 256 + 4 * n, *v as f32);
        }
        for (r, row) in aff.iter().enumerate() {
            put_f32(&mut b, 268 + 4 * r, row[3] as f32); // qoffset_x/y/z
            for (c, v) in row.iter().enumerate() {
                put_f32(&mut b, 280 + 16 * r + 4 * c, *v as f32); // srow_x/y/z
            }
        }
        b[344..348].copy_from_slice(b"n+1\0");
        // bytes 348..352: extension flag, all zero (no extensions)
        Ok(b)
    }
}

fn put_i16(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_i32(b: &mut [u8], at: usize, v: i32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes header and voxels: `data` is C-order `[C, D, H, W]`, written in NIfTI order
/// (i = D fastest, then H, then W, then channel), little-endian float32.
pub fn write_volume(
    out: &mut dyn Write,
    header: &VolumeHeader,
    data: &[f32],
) -> std::io::Result<()> {
    let bytes = header
        .to_bytes()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    if data.len() != header.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "volume has {} values but its header describes {}",
                data.len(),
                header.len()
            ),
        ));
    }
    out.write_all(&bytes)?;
    let [c, d, h, w] = header.shape;
    // One output row (fixed channel, k, j; i running over D) at a time.
    let mut row = vec![0u8; 4 * d];
    for ch in 0..c {
        let base = ch * d * h * w;
        for k in 0..w {
            for j in 0..h {
                for i in 0..d {
                    let v = data[base + i * h * w + j * w + k];
                    row[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
                }
                out.write_all(&row)?;
            }
        }
    }
    Ok(())
}

/// What `read_own_header` finds in a file we may have written earlier.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderSummary {
    pub dims: [i16; 8],
    pub datatype: i16,
    pub vox_offset: f32,
    pub descrip: String,
}

/// Reads the first 352 bytes of a (possibly gzipped) NIfTI-1 stream and summarises the fields
/// that identify one of our outputs. `None` when it is not a little-endian NIfTI-1 single file.
pub fn read_header_summary(input: &mut dyn Read) -> std::io::Result<Option<HeaderSummary>> {
    let mut b = [0u8; DATA_OFFSET];
    match input.read_exact(&mut b) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if i32::from_le_bytes([b[0], b[1], b[2], b[3]]) != HEADER_BYTES as i32
        || &b[344..348] != b"n+1\0"
    {
        return Ok(None);
    }
    let mut dims = [0i16; 8];
    for (n, v) in dims.iter_mut().enumerate() {
        *v = i16::from_le_bytes([b[40 + 2 * n], b[41 + 2 * n]]);
    }
    let descrip_bytes = &b[148..228];
    let end = descrip_bytes
        .iter()
        .position(|&x| x == 0)
        .unwrap_or(descrip_bytes.len());
    Ok(Some(HeaderSummary {
        dims,
        datatype: i16::from_le_bytes([b[70], b[71]]),
        vox_offset: f32::from_le_bytes([b[108], b[109], b[110], b[111]]),
        descrip: String::from_utf8_lossy(&descrip_bytes[..end]).into_owned(),
    }))
}

impl HeaderSummary {
    /// Whether this header is exactly the one `header` would produce (shape, type, description).
    pub fn matches(&self, header: &VolumeHeader) -> bool {
        let [c, d, h, w] = header.shape;
        let ndim: i16 = if c > 1 { 4 } else { 3 };
        let want = [ndim, d as i16, h as i16, w as i16, c as i16, 1, 1, 1];
        let used = 1 + ndim as usize;
        self.dims[..used] == want[..used]
            && self.datatype == DT_FLOAT32
            && self.vox_offset == DATA_OFFSET as f32
            && self.descrip == header.descrip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotation matrix from quaternion + qfac, as nifti1.h defines it (independent of `quaternion`).
    fn rotation_from_quaternion(b: f64, c: f64, d: f64, qfac: f64) -> [[f64; 3]; 3] {
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let mut r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        for row in r.iter_mut() {
            row[2] *= qfac;
        }
        r
    }

    #[test]
    fn every_orientation_round_trips_through_the_quaternion() {
        let letters = [['R', 'L'], ['A', 'P'], ['S', 'I']];
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let mut count = 0;
        for p in perms {
            for signs in 0..8 {
                let code: String = (0..3).map(|a| letters[p[a]][(signs >> a) & 1]).collect();
                let r = orientation_matrix(&code).unwrap();
                let (q, qfac) = quaternion(r);
                let back = rotation_from_quaternion(q[0], q[1], q[2], qfac);
                for w in 0..3 {
                    for a in 0..3 {
                        assert!(
                            (back[w][a] - r[w][a]).abs() < 1e-6,
                            "{code}: {back:?} vs {r:?}"
                        );
                    }
                }
                count += 1;
            }
        }
        assert_eq!(count, 48);
    }

    #[test]
    fn ras_affine_is_diagonal_and_centred() {
        let m = affine("RAS", [1.1, 1.1, 1.1], [144, 176, 112]).unwrap();
        assert_eq!(m[0][0], 1.1f32 as f64);
        assert_eq!(m[0][1], 0.0);
        assert!((m[0][3] + 1.1f32 as f64 * 143.0 / 2.0).abs() < 1e-9);
        assert!((m[2][3] + 1.1f32 as f64 * 111.0 / 2.0).abs() < 1e-9);
        let m = affine("LPS", [1.0, 2.0, 3.0], [3, 3, 3]).unwrap();
        assert_eq!(m[0][0], -1.0);
        assert_eq!(m[1][1], -2.0);
        assert_eq!(m[2][2], 3.0);
        assert_eq!(m[0][3], 1.0);
        assert_eq!(m[1][3], 2.0);
        assert_eq!(m[2][3], -3.0);
    }

    #[test]
    fn bad_orientation_and_spacing_are_rejected() {
        for code in ["RAR", "RA", "RASX", "XYZ", "", "RRS"] {
            assert!(
                matches!(orientation_matrix(code), Err(GeometryError::Orientation(_))),
                "{code}"
            );
        }
        assert!(matches!(
            affine("RAS", [1.0, 0.0, 1.0], [2, 2, 2]),
            Err(GeometryError::Spacing(_))
        ));
        assert!(matches!(
            affine("RAS", [1.0, f32::NAN, 1.0], [2, 2, 2]),
            Err(GeometryError::Spacing(_))
        ));
    }

    #[test]
    fn transpose_puts_d_fastest() {
        let header = VolumeHeader {
            shape: [1, 2, 3, 4],
            spacing_mm: [1.0; 3],
            orientation: "RAS".into(),
            descrip: "t".into(),
        };
        let data: Vec<f32> = (0..24).map(|x| x as f32).collect();
        let mut out = Vec::new();
        write_volume(&mut out, &header, &data).unwrap();
        assert_eq!(out.len(), header.file_bytes());
        let vals: Vec<f32> = out[DATA_OFFSET..]
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // voxel (i, j, k) at i + 2 j + 6 k holds data[i*12 + j*4 + k]
        for k in 0..4 {
            for j in 0..3 {
                for i in 0..2 {
                    assert_eq!(vals[i + 2 * j + 6 * k], (i * 12 + j * 4 + k) as f32);
                }
            }
        }
        let summary = read_header_summary(&mut &out[..]).unwrap().unwrap();
        assert!(summary.matches(&header));
        let other = VolumeHeader {
            descrip: "u".into(),
            ..header.clone()
        };
        assert!(!summary.matches(&other));
        assert!(write_volume(&mut Vec::new(), &header, &data[1..]).is_err());
    }

    #[test]
    fn long_description_and_bad_shapes_are_errors() {
        let mut header = VolumeHeader {
            shape: [1, 2, 3, 4],
            spacing_mm: [1.0; 3],
            orientation: "RAS".into(),
            descrip: "x".repeat(80),
        };
        assert!(matches!(
            header.to_bytes(),
            Err(GeometryError::Description(_))
        ));
        header.descrip = "ok".into();
        header.shape = [1, 0, 3, 4];
        assert!(matches!(header.to_bytes(), Err(GeometryError::Shape(_))));
        header.shape = [1, 40000, 3, 4];
        assert!(matches!(header.to_bytes(), Err(GeometryError::Shape(_))));
        assert_eq!(read_header_summary(&mut &[0u8; 10][..]).unwrap(), None);
    }
}

#[cfg(test)]
mod read_back_tests {
    //! The header as an independent reader (the `nifti` crate) sees it.
    use super::*;

    #[test]
    fn nifti_crate_reads_our_header_fields() {
        for (code, spacing) in [("RAS", [1.1f32, 1.1, 1.1]), ("LPI", [0.5, 1.0, 2.0])] {
            let h = VolumeHeader {
                shape: [1, 6, 5, 4],
                spacing_mm: spacing,
                orientation: code.into(),
                descrip: "seed=3 model=abc".into(),
            };
            let mut bytes = Vec::new();
            write_volume(&mut bytes, &h, &vec![0.0; 120]).unwrap();
            let r = ::nifti::NiftiHeader::from_reader(std::io::Cursor::new(&bytes)).unwrap();
            assert_eq!(r.sizeof_hdr, 348);
            assert_eq!(r.dim, [3, 6, 5, 4, 1, 1, 1, 1]);
            assert_eq!(r.datatype, DT_FLOAT32);
            assert_eq!(r.bitpix, 32);
            assert_eq!(&r.pixdim[1..4], &spacing[..]);
            assert_eq!(r.vox_offset, 352.0);
            assert_eq!((r.qform_code, r.sform_code), (2, 2));
            assert_eq!(r.xyzt_units, 2);
            assert_eq!(&r.descrip[..16], b"seed=3 model=abc");
            assert_eq!(&r.magic, b"n+1\0");
            let m = affine(code, spacing, [6, 5, 4]).unwrap();
            for (row, got) in [r.srow_x, r.srow_y, r.srow_z].iter().enumerate() {
                for col in 0..4 {
                    assert_eq!(got[col], m[row][col] as f32, "{code} srow {row} col {col}");
                }
            }
            assert_eq!(
                [r.quatern_x, r.quatern_y, r.quatern_z],
                [m[0][3] as f32, m[1][3] as f32, m[2][3] as f32]
            );
        }
    }
}
