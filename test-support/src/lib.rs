//! Test-only support shared by every crate's tests: where the MONAI fixtures live, readers for
//! their `.npy` and `.safetensors` files, the fixture networks' configs built from their
//! case.json, and model blobs written from the fixture checkpoints with the weights writer.
//!
//! Every function panics with a message naming the file and what is wrong: this crate only
//! serves tests (it is `publish = false` and only ever a dev-dependency).

pub mod blob;
pub mod config;
pub mod files;

pub use blob::{fixture_blob, fixture_tensors, write_fixture_blob};
pub use config::{case, fixture_config, fixture_decoder, fixture_encoder, fixture_scheduler, fixture_unet};
pub use files::{fixtures_dir, monai, read_npy, read_safetensors, rel_l2, write_npy, Tensors};
