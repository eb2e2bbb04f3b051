//! `brats_ldm.inspect(path)`: the report `brats-ldm inspect --json` prints (same fields, same
//! number formatting), from the blob's validating reader. The CLI's report (`src/cmd/inspect.rs`)
//! lives in the binary crate; the tests compare both on the same blob.

use crate::errors::{Failure, Kind, Result};
use ldm_weights::{parameter_counts, Blob, DType, ModelConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
    }
}

/// Parameters of `proj_attn` layers that the UNet's config says are not applied (so not stored).
fn unused_proj_attn_parameters(cfg: &ModelConfig) -> u64 {
    match &cfg.unet {
        Some(u) if !u.attention_output_projection => {
            let mut with = cfg.clone();
            if let Some(w) = with.unet.as_mut() {
                w.attention_output_projection = true;
            }
            parameter_counts(&with)
                .unet
                .saturating_sub(parameter_counts(cfg).unet)
        }
        _ => 0,
    }
}

#[derive(Serialize)]
struct NetworkSummary {
    tensors: usize,
    parameters: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct Checksum {
    algorithm: &'static str,
    value: String,
    status: &'static str,
}

#[derive(Serialize)]
struct TensorRow<'a> {
    name: &'a str,
    dtype: &'static str,
    shape: &'a [usize],
    offset: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct Report<'a> {
    path: String,
    format_version: String,
    file_bytes: u64,
    header_bytes: u64,
    tensor_bytes: u64,
    checksum: Checksum,
    tensor_count: usize,
    dtypes: BTreeMap<&'static str, usize>,
    networks: BTreeMap<&'static str, NetworkSummary>,
    parameters_total: u64,
    unused_proj_attn_parameters: u64,
    config: &'a ModelConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    tensors: Option<Vec<TensorRow<'a>>>,
}

fn networks(blob: &Blob) -> BTreeMap<&'static str, NetworkSummary> {
    let mut out: BTreeMap<&'static str, NetworkSummary> = BTreeMap::new();
    for t in blob.tensors() {
        let net = if t.name.starts_with("autoencoder.encoder.")
            || t.name.starts_with("autoencoder.quant_conv_")
        {
            "encoder"
        } else if t.name.starts_with("autoencoder.") {
            "decoder"
        } else {
            "unet"
        };
        let e = out.entry(net).or_insert(NetworkSummary {
            tensors: 0,
            parameters: 0,
            bytes: 0,
        });
        e.tensors += 1;
        e.parameters += t.shape.iter().product::<usize>() as u64;
        e.bytes += t.len;
    }
    out
}

/// The JSON text of the report on the blob at `path` (opened and fully validated).
pub fn report_json(path: &Path, with_tensors: bool) -> Result<String> {
    let blob = Blob::open(path).map_err(|e| {
        Failure::new(
            Kind::Model,
            format!("{} is not a valid blob: {e}", path.display()),
        )
    })?;
    let cfg = blob.config();
    let (major, minor) = blob.format_version();
    let nets = networks(&blob);
    let mut dtypes = BTreeMap::new();
    for t in blob.tensors() {
        *dtypes.entry(dtype_name(t.dtype)).or_insert(0) += 1;
    }
    let report = Report {
        path: path.display().to_string(),
        format_version: format!("{major}.{minor}"),
        file_bytes: blob.file_len(),
        header_bytes: blob.header_len(),
        tensor_bytes: blob.tensor_bytes(),
        checksum: Checksum {
            algorithm: "xxh3-64",
            value: format!("{:016x}", blob.checksum()),
            status: "verified",
        },
        tensor_count: blob.tensors().len(),
        dtypes,
        parameters_total: nets.values().map(|n| n.parameters).sum(),
        networks: nets,
        unused_proj_attn_parameters: unused_proj_attn_parameters(cfg),
        config: cfg,
        tensors: with_tensors.then(|| {
            blob.tensors()
                .map(|t| TensorRow {
                    name: &t.name,
                    dtype: dtype_name(t.dtype),
                    shape: &t.shape,
                    offset: t.offset,
                    bytes: t.len,
                })
                .collect()
        }),
    };
    serde_json::to_string(&report)
        .map_err(|e| Failure::new(Kind::Other, format!("serialising the report: {e}")))
}
