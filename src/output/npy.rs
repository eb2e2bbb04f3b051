//! `.npy` float32 files, from `ldm_io::npy`: the bounded, validating reader (`--init-noise`) and
//! the writer (`--format npy`).

pub use ldm_io::npy::{header_bytes, read_f32, write_f32};
