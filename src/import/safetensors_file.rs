//! Reader for `.safetensors` checkpoints through the `safetensors` crate (which validates the
//! header size, JSON, dtypes, and that offsets tile the data exactly). Floating tensors only.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::import::elements::{decode, SourceTensor};
use crate::import::pickle::StorageDtype;
use crate::import::ImportError;

/// Read every tensor, sorted by name. `key` keeps only tensors named `key.*` (prefix stripped),
/// mirroring `--key` for nested torch state dicts.
pub fn read(path: &Path, key: Option<&str>) -> Result<Vec<SourceTensor>, ImportError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|cause| ImportError::Io {
        path: shown.clone(),
        cause,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ImportError::Safetensors {
        path: shown.clone(),
        msg: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let name = match key {
            None => name,
            Some(k) => match name.strip_prefix(k).and_then(|r| r.strip_prefix('.')) {
                Some(rest) => rest.to_string(),
                None => continue,
            },
        };
        let dtype = match view.dtype() {
            Dtype::F32 => StorageDtype::F32,
            Dtype::F16 => StorageDtype::F16,
            Dtype::BF16 => StorageDtype::BF16,
            Dtype::F64 => StorageDtype::F64,
            other => {
                return Err(ImportError::Tensor {
                    path: shown.clone(),
                    tensor: name,
                    msg: format!("dtype {other:?} is not a floating type this converter reads (F32, F16, BF16, F64)"),
                })
            }
        };
        let data = decode(view.data(), dtype, false);
        out.push(SourceTensor {
            name,
            shape: view.shape().to_vec(),
            data,
            source_dtype: dtype,
        });
    }
    if out.is_empty() {
        if let Some(k) = key {
            return Err(ImportError::Layout {
                path: shown,
                msg: format!("--key {k}: no tensor is named `{k}.*`"),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
