//! Reader for `.safetensors` checkpoints through the `safetensors` crate (which validates the
//! header size, JSON, dtypes, and that offsets tile the data exactly). Floating tensors only.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::elements::{decode, SourceTensor};
use crate::pickle::StorageDtype;
use crate::ImportError;

/// Read every tensor, sorted by name. `key` keeps only tensors named `key.*` (prefix stripped),
/// mirroring `--key` for nested torch state dicts.
pub fn read(path: &Path, key: Option<&str>) -> Result<Vec<SourceTensor>, ImportError> {
    let shown = path.display().to_string();
    // Regular files only (or a device read up to the memory budget), never a FIFO.
    let bytes = ldm_io::input::read_all(path, ldm_io::Budget::default()).map_err(|cause| ImportError::Io {
        path: shown.clone(),
        cause,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ImportError::Safetensors {
        path: shown.clone(),
        msg: match e {
            // The crate's message names no tensor for this one: find it.
            safetensors::SafeTensorError::TensorInvalidInfo => {
                inconsistent_tensor(&bytes).unwrap_or_else(|| e.to_string())
            }
            e => e.to_string(),
        },
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

/// Bytes per element of a safetensors dtype name (None: unknown).
fn dtype_bytes(name: &str) -> Option<u64> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// The first tensor of a safetensors header whose shape, dtype and offsets disagree, described
/// by name (the header is read only when its stated length fits in the file).
fn inconsistent_tensor(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..end)?).ok()?;
    for (name, info) in header.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let dtype = info.get("dtype")?.as_str()?;
        let shape: Vec<u64> = info
            .get("shape")?
            .as_array()?
            .iter()
            .map(|v| v.as_u64())
            .collect::<Option<_>>()?;
        let offsets: Vec<u64> = info
            .get("data_offsets")?
            .as_array()?
            .iter()
            .map(|v| v.as_u64())
            .collect::<Option<_>>()?;
        let name = ldm_io::escape::escape(name);
        let Some(size) = dtype_bytes(dtype) else {
            return Some(format!(
                "tensor `{name}`: unknown dtype {}",
                ldm_io::escape::escape(dtype)
            ));
        };
        let need = shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
        let [start, stop] = offsets[..] else {
            return Some(format!(
                "tensor `{name}`: data_offsets {offsets:?} is not [start, end]"
            ));
        };
        match need {
            None => return Some(format!("tensor `{name}`: shape {shape:?} of {dtype} overflows")),
            Some(need) if stop < start || stop - start != need => {
                return Some(format!(
                    "tensor `{name}`: shape {shape:?} of {dtype} needs {need} bytes but data_offsets [{start}, {stop}] hold {}",
                    stop.saturating_sub(start)
                ))
            }
            Some(_) => {}
        }
    }
    None
}
