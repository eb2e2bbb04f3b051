//! Checkpoint import: readers for MONAI checkpoints (`torch.save` zip archives through a
//! restricted unpickler, and `.safetensors`), the monai >= 1.4 -> generative 0.2.3 key mapping,
//! the architecture description (preset, JSON config, or a MONAI bundle directory and its
//! config files resolved as MONAI's ConfigParser does), matching against the blob contract,
//! and the conversion itself (`convert::convert_to_file`), shared by the CLI and the Python
//! package.

pub mod arch;
pub mod assemble;
pub mod bundle;
pub mod bundle_config;
pub mod bundle_expr;
pub mod convert;
pub mod elements;
pub mod json_size;
pub mod keymap;
pub mod pickle;
pub mod safetensors_file;
pub mod torch_zip;

use std::path::Path;

use thiserror::Error;

pub use elements::SourceTensor;

/// Everything that can go wrong while reading a checkpoint file.
#[derive(Debug, Error)]
pub enum ImportError {
    #[error("cannot read {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{path} is neither a torch.save zip archive nor a safetensors file: {reason}")]
    UnknownFormat { path: String, reason: String },
    #[error("{path}: invalid zip archive: {cause}")]
    Zip {
        path: String,
        cause: zip::result::ZipError,
    },
    #[error("{path}: {cause}")]
    Pickle {
        path: String,
        cause: pickle::PickleError,
    },
    #[error("{path}: invalid safetensors file: {msg}")]
    Safetensors { path: String, msg: String },
    #[error("{path}: {msg}")]
    Layout { path: String, msg: String },
    #[error("{path}: tensor `{tensor}`: {msg}")]
    Tensor {
        path: String,
        tensor: String,
        msg: String,
    },
}

/// Read every tensor of a checkpoint, converted to f32, in the file's own order.
///
/// The format is chosen by content (zip magic or safetensors header), not by extension.
/// `key` selects one nested dictionary (e.g. `state_dict`) for checkpoints that wrap theirs.
pub fn read_checkpoint(path: &Path, key: Option<&str>) -> Result<Vec<SourceTensor>, ImportError> {
    let shown = path.display().to_string();
    let io = |cause| ImportError::Io {
        path: shown.clone(),
        cause,
    };
    // A FIFO or socket is refused before it is opened (it could block forever).
    let mut file = ldm_io::input::Input::open(path).map_err(io)?.file;
    let mut magic = [0u8; 9];
    let n = read_up_to(&mut file, &mut magic).map_err(io)?;
    if magic[..n].starts_with(b"PK\x03\x04") {
        return torch_zip::read(path, file, key);
    }
    drop(file);
    // safetensors: an 8-byte little-endian header length, then a JSON object.
    if n == 9 && magic[8] == b'{' {
        return safetensors_file::read(path, key);
    }
    let reason = if magic[..n].starts_with(&[0x80, 0x02, 0x8a]) {
        "this is a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current torch or export safetensors"
    } else {
        "unrecognised content (expected a zip archive from torch.save, or a safetensors header)"
    };
    Err(ImportError::UnknownFormat {
        path: shown,
        reason: reason.into(),
    })
}

fn read_up_to(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
