//! NIfTI-1 output of `generate`, from `ldm_io::nifti`: `VolumeHeader` (shape, spacing,
//! orientation code, description) lowered to the crate's one header builder and writer, and the
//! summary reader of our own headers. Geometry conventions: see `ldm_io::nifti`.

pub use ldm_io::nifti::{affine, read_header_summary, write_volume, VolumeHeader};
