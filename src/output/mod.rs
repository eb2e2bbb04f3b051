//! Everything `generate` writes: volume files (NIfTI-1 `.nii`/`.nii.gz` or `.npy`), PNG previews,
//! the JSON-lines manifest, seed sharding for job arrays, and crash-safe (temp + rename) writes.
//! Plain functions over plain data; the command in `cmd/generate/` strings them together.

pub mod atomic;
// per-volume claim files for runs sharing an output folder
pub mod claim;
pub mod manifest;
pub mod nifti;
pub mod npy;
pub mod preview;
pub mod shard;
pub mod volume;
