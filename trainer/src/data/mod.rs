//! Data pipeline: NIfTI I/O, the bundle's preprocessing (MONAI 1.5 semantics), dataset
//! discovery and splits, procedural brain phantoms, training patches, and the BraTS (Task01)
//! download.

pub mod affine;
pub mod dataset;
pub mod download;
pub mod error;
pub mod loader;
pub mod nifti_io;
pub mod phantom;
pub mod preprocess;
pub mod rng;
pub mod transforms;
pub mod volume;

pub use dataset::{discover, split, Dataset, DatasetKind, Split};
pub use error::{DataError, Result};
pub use loader::{load_set, LoadedSet, PatchSampler, VAE_PATCH};
pub use nifti_io::{read_info, read_volume, write_volume, NiftiInfo};
pub use preprocess::{
    preprocess_file, preprocess_file_within, preprocess_volume, PreprocessCache, PreprocessConfig, PreprocessPlan, Preprocessed,
};
pub use rng::SplitMix64;
pub use transforms::{random_crop, PercentileScaling};
pub use volume::{Volume, VolumeStats};
