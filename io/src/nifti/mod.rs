//! NIfTI-1 single files (`.nii`, `.nii.gz`): the reader with its size checks (`read`), the one
//! writer and header builder (`write`), the orientation-code geometry and the one quaternion
//! code (`geometry`), and the summary of our own headers used to skip complete outputs
//! (`summary`).
//!
//! Geometry conventions of `generate`'s outputs (documented for users in docs/batch-jobs.md):
//! - array axis D is NIfTI axis i, H is j, W is k (what MONAI/nibabel do with a channel-first
//!   `[C, X, Y, Z]` array); channels, when more than one, become the 4th dimension;
//! - orientation letters name the world direction each array axis increases towards, in the
//!   RAS+ world of NIfTI ("RAS": i -> Right, j -> Anterior, k -> Superior; "LPS" flips x and y);
//! - the volume's centre voxel sits at world (0, 0, 0) mm;
//! - qform and sform both carry this affine with code 2 (aligned anatomical), units mm,
//!   datatype float32, no intensity scaling.

mod geometry;
mod read;
mod summary;
mod write;

pub use geometry::{
    affine, orientation_matrix, quaternion, quaternion_of_affine, GeometryError, DESCRIP_MAX,
};
pub use nifti::{Endianness, NiftiType};
pub use read::{
    read_bytes_needed, read_checked_info, read_info, read_volume, read_volume_within, Image,
    NiftiError, NiftiInfo, TRAILING_SLACK,
};
pub use summary::{read_header_summary, HeaderSummary};
pub use write::{
    write_image, write_image_file, write_volume, Element, ImageHeader, VolumeHeader, DATA_OFFSET,
    DT_FLOAT32, HEADER_BYTES, UNITS_MM, XFORM_ALIGNED_ANAT, XFORM_SCANNER_ANAT,
};

#[cfg(test)]
mod tests;
