//! The one NIfTI-1 writer: a 352-byte header (348 + empty extension flag) built from an affine by
//! one code path (qform via `quaternion_of_affine`, sform = the affine), and the voxels of a
//! C-order `[C, X, Y, Z]` array written in NIfTI's order (x fastest, then y, z, channel),
//! little-endian. `VolumeHeader` is `generate`'s description of its outputs (shape, spacing,
//! orientation code) and lowers to the same `ImageHeader`.

use std::io::Write;
use std::path::Path;

use super::geometry::{affine, quaternion_of_affine, GeometryError, DESCRIP_MAX};
use crate::atomic;

/// Size of the NIfTI-1 header proper.
pub const HEADER_BYTES: usize = 348;
/// Header + the 4-byte extension flag: voxel data starts here (`vox_offset`).
pub const DATA_OFFSET: usize = 352;
/// NIfTI datatype code of float32.
pub const DT_FLOAT32: i16 = 16;
/// `NIFTI_XFORM_SCANNER_ANAT`: scanner-based anatomical coordinates.
pub const XFORM_SCANNER_ANAT: i16 = 1;
/// `NIFTI_XFORM_ALIGNED_ANAT`: coordinates aligned to another file or to anatomical truth.
pub const XFORM_ALIGNED_ANAT: i16 = 2;
/// `NIFTI_UNITS_MM`.
pub const UNITS_MM: u8 = 2;

/// A voxel type we write: its NIfTI datatype code, bits, and little-endian bytes.
pub trait Element: Copy {
    const DATATYPE: i16;
    const BITPIX: i16;
    const BYTES: usize;
    fn put_le(self, out: &mut [u8]);
}

impl Element for f32 {
    const DATATYPE: i16 = DT_FLOAT32;
    const BITPIX: i16 = 32;
    const BYTES: usize = 4;
    fn put_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
}

impl Element for i16 {
    const DATATYPE: i16 = 4;
    const BITPIX: i16 = 16;
    const BYTES: usize = 2;
    fn put_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
}

impl Element for u8 {
    const DATATYPE: i16 = 2;
    const BITPIX: i16 = 8;
    const BYTES: usize = 1;
    fn put_le(self, out: &mut [u8]) {
        out[0] = self;
    }
}

/// Everything a header we write carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageHeader {
    /// Spatial size (i, j, k).
    pub dims: [usize; 3],
    /// More than one makes a 4-D file (channels as the 4th dimension).
    pub channels: usize,
    /// Voxel-to-world affine, the first three rows (mm).
    pub affine: [[f64; 4]; 3],
    /// qform_code and sform_code.
    pub xform_code: i16,
    /// At most 79 bytes.
    pub descrip: String,
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

impl ImageHeader {
    fn validate(&self) -> Result<(), GeometryError> {
        let ok = |n: usize| (1..=i16::MAX as usize).contains(&n);
        if !self.dims.iter().all(|&n| ok(n)) || !ok(self.channels) {
            return Err(GeometryError::Dims {
                dims: self.dims,
                channels: self.channels,
            });
        }
        if self.descrip.len() > DESCRIP_MAX {
            return Err(GeometryError::Description(self.descrip.clone()));
        }
        let zero_column = (0..3).any(|j| (0..3).all(|i| self.affine[i][j] == 0.0));
        if zero_column || self.affine.iter().flatten().any(|v| !v.is_finite()) {
            return Err(GeometryError::Affine(self.affine));
        }
        Ok(())
    }

    /// Number of values (voxels times channels).
    pub fn len(&self) -> usize {
        self.dims.iter().product::<usize>() * self.channels
    }

    /// True when a size is zero (never for a header that passed validation).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 352 bytes that precede voxel data of type `T`.
    pub fn to_bytes<T: Element>(&self) -> Result<[u8; DATA_OFFSET], GeometryError> {
        self.validate()?;
        let [x, y, z] = self.dims;
        let c = self.channels;
        let (q, qfac, zooms) = quaternion_of_affine(self.affine);
        let mut b = [0u8; DATA_OFFSET];
        put_i32(&mut b, 0, HEADER_BYTES as i32);
        b[38] = b'r'; // regular
        let ndim: i16 = if c > 1 { 4 } else { 3 };
        let dims: [i16; 8] = [ndim, x as i16, y as i16, z as i16, c as i16, 1, 1, 1];
        for (n, v) in dims.iter().enumerate() {
            put_i16(&mut b, 40 + 2 * n, *v);
        }
        put_i16(&mut b, 70, T::DATATYPE);
        put_i16(&mut b, 72, T::BITPIX);
        let pixdim: [f32; 8] = [
            qfac as f32,
            zooms[0] as f32,
            zooms[1] as f32,
            zooms[2] as f32,
            1.0,
            1.0,
            1.0,
            1.0,
        ];
        for (n, v) in pixdim.iter().enumerate() {
            put_f32(&mut b, 76 + 4 * n, *v);
        }
        put_f32(&mut b, 108, DATA_OFFSET as f32); // vox_offset
        put_f32(&mut b, 112, 1.0); // scl_slope
        put_f32(&mut b, 116, 0.0); // scl_inter
        b[123] = UNITS_MM;
        b[148..148 + self.descrip.len()].copy_from_slice(self.descrip.as_bytes());
        put_i16(&mut b, 252, self.xform_code); // qform_code
        put_i16(&mut b, 254, self.xform_code); // sform_code
        for (n, v) in q.iter().enumerate() {
            put_f32(&mut b, 256 + 4 * n, *v as f32);
        }
        for (r, row) in self.affine.iter().enumerate() {
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

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

/// Writes header and voxels: `data` is C-order `[C, X, Y, Z]`, written in NIfTI order
/// (x fastest, then y, then z, then channel).
pub fn write_image<T: Element>(
    out: &mut dyn Write,
    header: &ImageHeader,
    data: &[T],
) -> std::io::Result<()> {
    let bytes = header.to_bytes::<T>().map_err(|e| invalid(e.to_string()))?;
    if data.len() != header.len() {
        return Err(invalid(format!(
            "volume has {} values but its header describes {}",
            data.len(),
            header.len()
        )));
    }
    out.write_all(&bytes)?;
    let [d, h, w] = header.dims;
    // One output row (fixed channel, k, j; i running over X) at a time.
    let mut row = vec![0u8; T::BYTES * d];
    for ch in 0..header.channels {
        let base = ch * d * h * w;
        for k in 0..w {
            for j in 0..h {
                for i in 0..d {
                    data[base + i * h * w + j * w + k]
                        .put_le(&mut row[T::BYTES * i..T::BYTES * (i + 1)]);
                }
                out.write_all(&row)?;
            }
        }
    }
    Ok(())
}

/// Writes `path` atomically (temp file + rename) as NIfTI-1, gzipped (deterministically) when
/// the name ends in `.nii.gz`; the name must end in `.nii` or `.nii.gz`.
pub fn write_image_file<T: Element>(
    path: &Path,
    header: &ImageHeader,
    data: &[T],
) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let gz = name.ends_with(".nii.gz");
    if !gz && !name.ends_with(".nii") {
        return Err(invalid(format!(
            "{}: output name must end in .nii or .nii.gz",
            path.display()
        )));
    }
    atomic::write_file(path, |w| {
        if gz {
            let mut enc = crate::gzip::encoder(w);
            write_image(&mut enc, header, data)?;
            enc.finish()?;
            Ok(())
        } else {
            write_image(w, header, data)
        }
    })
    .map(|_| ())
}

/// Everything that varies between `generate`'s NIfTI headers.
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

    /// True when the shape has no voxels (never for a valid header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total bytes of the `.nii` file (uncompressed).
    pub fn file_bytes(&self) -> usize {
        DATA_OFFSET + 4 * self.len()
    }

    /// The general header: affine from orientation and spacing, code 2 (aligned anatomical).
    pub fn image_header(&self) -> Result<ImageHeader, GeometryError> {
        self.validate()?;
        let [c, d, h, w] = self.shape;
        Ok(ImageHeader {
            dims: [d, h, w],
            channels: c,
            affine: affine(&self.orientation, self.spacing_mm, [d, h, w])?,
            xform_code: XFORM_ALIGNED_ANAT,
            descrip: self.descrip.clone(),
        })
    }

    /// The 352 bytes that precede the voxel data: header plus an empty extension flag.
    pub fn to_bytes(&self) -> Result<[u8; DATA_OFFSET], GeometryError> {
        self.image_header()?.to_bytes::<f32>()
    }
}

/// Writes header and voxels of `generate`'s output: `data` is C-order `[C, D, H, W]`.
pub fn write_volume(
    out: &mut dyn Write,
    header: &VolumeHeader,
    data: &[f32],
) -> std::io::Result<()> {
    let image = header.image_header().map_err(|e| invalid(e.to_string()))?;
    write_image(out, &image, data)
}
