//! ldm-weights: the frozen weight blob shared by the trainer and the runtime.
//!
//! A blob is one little-endian file: magic + format version, a bincode-2 header (model configs,
//! scheduler, scale factor, latent shape, output geometry, provenance, tensor table), the tensor
//! data (each tensor 256-byte aligned), and a checksum. `FORMAT.md` beside this crate is the spec.
//! The reader validates everything before it trusts anything.
//!
//! Tensor names are the MONAI Generative 0.2.3 state-dict keys, prefixed by the network:
//! `autoencoder.decoder.blocks.0.conv.weight`, `unet.down_blocks.1.attentions.0.to_q.weight`, ...
//! `network` declares each network once (layers in forward order); `names::expected_tensors`
//! derives from it exactly which tensors (name and shape) a config requires.
//!
//! Write: `TensorData::from_f32` per tensor, then `write_blob_file` (atomic). Read: `Blob::open`
//! (one read, then validation), `Blob::tensor(name)` for a `TensorView`, `copy_to_f32` to convert.

pub mod config;
pub mod error;
pub mod format;
pub mod names;
pub mod network;
pub mod reader;
pub mod report;
pub mod tensor;
pub mod validate;
pub mod writer;

pub use config::*;
pub use error::BlobError;
pub use names::{expected_tensors, parameter_counts, ParamCounts, TensorSpec};
pub use reader::{Blob, TensorInfo};
pub use tensor::{TensorData, TensorView};
pub use validate::ConfigError;
pub use writer::{write_blob, write_blob_file};

/// Element type of a stored tensor. Computation is always f32 on the CPU; f16/bf16 halve storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    /// The short name used in reports, CLI options and kernel names: "f32", "f16", "bf16".
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}
