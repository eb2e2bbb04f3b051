//! Volume files as the CLI writes them, through the shared I/O crate (ldm-io): `.nii.gz` and
//! `.nii` by its one NIfTI-1 writer (deterministic gzip), `.npy` by its float32 writer, each
//! created atomically (temporary file in the destination directory, then renamed). Plus the
//! check that a user's affine is one a NIfTI qform can express.

use ldm_io::nifti::{self, ImageHeader};
use ldm_io::{atomic, npy};
use std::path::Path;

/// How far from orthonormal an affine's normalised columns may be.
const ORTHO_TOLERANCE: f64 = 1e-4;

/// File format, chosen by the file name's ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    NiiGz,
    Nii,
    Npy,
}

impl Format {
    pub fn of_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".nii.gz") {
            Some(Format::NiiGz)
        } else if name.ends_with(".nii") {
            Some(Format::Nii)
        } else if name.ends_with(".npy") {
            Some(Format::Npy)
        } else {
            None
        }
    }
}

/// Refuses an affine whose 3x3 part is not a rotation or reflection times positive voxel sizes
/// (a zero column, shear, non-finite entries): the qform written next to the sform could not
/// express it and readers that prefer the qform would place the volume elsewhere.
pub fn check_affine(aff: &[[f64; 4]; 3]) -> Result<(), String> {
    if aff.iter().flatten().any(|v| !v.is_finite()) {
        return Err(format!("affine {aff:?} has a non-finite entry"));
    }
    let mut r = [[0.0f64; 3]; 3];
    for a in 0..3 {
        let size = (0..3).map(|k| aff[k][a] * aff[k][a]).sum::<f64>().sqrt();
        if size <= 0.0 {
            return Err(format!(
                "affine column {a} is zero: every voxel axis needs a positive size"
            ));
        }
        for k in 0..3 {
            r[k][a] = aff[k][a] / size;
        }
    }
    for a in 0..3 {
        for b in (a + 1)..3 {
            let dot: f64 = (0..3).map(|k| r[k][a] * r[k][b]).sum();
            if dot.abs() > ORTHO_TOLERANCE {
                return Err(format!(
                    "affine {aff:?} is not a rotation or reflection times voxel sizes (columns {a} and {b} are not \
                     orthogonal): NIfTI's qform cannot express shear"
                ));
            }
        }
    }
    Ok(())
}

/// Writes `data` (C-order `[C, D, H, W]`) to `path` in `format`, atomically. NIfTI headers are
/// checked before any file is created.
pub fn write(
    path: &Path,
    format: Format,
    header: &ImageHeader,
    data: &[f32],
) -> Result<(), String> {
    let cant = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    match format {
        Format::Npy => {
            let [d, h, w] = header.dims;
            let shape = [header.channels, d, h, w];
            atomic::write_file(path, |out| npy::write_f32(out, &shape, data))
                .map(|_| ())
                .map_err(|e| cant(&e))
        }
        Format::Nii | Format::NiiGz => {
            header.to_bytes::<f32>().map_err(|e| cant(&e))?;
            if data.len() != header.len() {
                return Err(cant(&format!(
                    "volume has {} values but its header describes {}",
                    data.len(),
                    header.len()
                )));
            }
            nifti::write_image_file(path, header, data).map_err(|e| cant(&e))
        }
    }
}
