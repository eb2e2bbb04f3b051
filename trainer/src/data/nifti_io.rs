//! NIfTI-1 reading and writing for the data pipeline, over `ldm_io::nifti` (the reader with its
//! size checks and the one writer): errors become `DataError`, images become `Volume`s.

use std::path::Path;

use ldm_io::nifti::{self, Element, ImageHeader, XFORM_SCANNER_ANAT};
use ldm_io::Budget;

use super::affine::Affine;
use super::error::{DataError, Result};
use super::volume::Volume;

pub use ldm_io::nifti::NiftiInfo;

/// Read and validate only the header of a NIfTI-1 file (.nii or .nii.gz).
pub fn read_info(path: &Path) -> Result<NiftiInfo> {
    Ok(nifti::read_info(path)?)
}

/// The header with the reader's size checks against the file (see
/// `ldm_io::nifti::read_checked_info`).
pub fn read_checked_info(path: &Path) -> Result<NiftiInfo> {
    Ok(nifti::read_checked_info(path)?)
}

/// Read one 3-D volume (see `ldm_io::nifti::read_volume_within`) within the default budget.
pub fn read_volume(path: &Path, channel: Option<usize>) -> Result<Volume> {
    read_volume_within(path, channel, Budget::default())
}

/// Read one 3-D volume whose float32 data must fit `budget`.
pub fn read_volume_within(path: &Path, channel: Option<usize>, budget: Budget) -> Result<Volume> {
    let img = nifti::read_volume_within(path, channel, budget)?;
    Ok(Volume {
        dims: img.dims,
        data: img.data,
        affine: img.affine,
    })
}

/// The description cut to NIfTI's 79 bytes at a character boundary.
fn descrip(text: &str) -> String {
    let mut end = text.len().min(ldm_io::nifti::DESCRIP_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Write a C-order `[C, X, Y, Z]` array as NIfTI-1 with `affine` (qform and sform, code 1,
/// scanner), gzipped when the name ends in .nii.gz; atomically (temp file + rename).
pub fn write_image<T: Element>(
    path: &Path,
    dims: [usize; 3],
    channels: usize,
    data: &[T],
    affine: &Affine,
    description: &str,
) -> Result<()> {
    let header = ImageHeader {
        dims,
        channels,
        affine: [affine[0], affine[1], affine[2]],
        xform_code: XFORM_SCANNER_ANAT,
        descrip: descrip(description),
    };
    nifti::write_image_file(path, &header, data).map_err(|e| DataError::io(path, e))
}

/// Write a volume as float32 NIfTI-1 with its affine (atomically: temp file + rename).
pub fn write_volume(path: &Path, volume: &Volume, description: &str) -> Result<()> {
    write_image(
        path,
        volume.dims,
        1,
        &volume.data,
        &volume.affine,
        description,
    )
}
