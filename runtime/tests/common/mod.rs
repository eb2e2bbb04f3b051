//! Test helpers: tiny .npy and .safetensors readers (little-endian f32 only), fixture blobs
//! written with the weights crate's writer, and the relative L2 error.
#![allow(dead_code)]

use ldm_weights::{names::expected_tensors, write_blob, Blob, DType, DecoderConfig, ModelConfig, OutputGeometry, Provenance, SchedulerConfig, TensorData, UnetConfig};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/monai")).join(rel)
}

/// Reads a little-endian f32 C-order .npy file.
pub fn npy(rel: &str) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(fixture(rel)).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let (hlen, start) = if b[6] == 1 { (u16::from_le_bytes([b[8], b[9]]) as usize, 10) } else { (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12) };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(header.contains("'<f4'") && header.contains("'fortran_order': False"), "{header}");
    let sh = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = sh.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let data: Vec<f32> = b[start + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

/// Reads every F32 tensor of a .safetensors file.
pub fn safetensors(rel: &str) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let b = std::fs::read(fixture(rel)).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&b[8..8 + n]).unwrap();
    let data = &b[8 + n..];
    let mut out = HashMap::new();
    // Entries look like "name":{"dtype":"F32","shape":[..],"data_offsets":[a,b]}
    for part in header.split("},").map(|s| s.trim_start_matches('{')) {
        let Some((name, rest)) = part.split_once(":{") else { continue };
        let name = name.trim().trim_matches('"').to_string();
        if name == "__metadata__" {
            continue;
        }
        assert!(rest.contains("\"F32\""), "{name}: {rest}");
        let shape_s = rest.split("\"shape\":[").nth(1).unwrap().split(']').next().unwrap();
        let shape: Vec<usize> = shape_s.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
        let offs = rest.split("\"data_offsets\":[").nth(1).unwrap().split(']').next().unwrap();
        let o: Vec<usize> = offs.split(',').map(|s| s.trim().parse().unwrap()).collect();
        let vals: Vec<f32> = data[o[0]..o[1]].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(vals.len(), shape.iter().product::<usize>());
        out.insert(name, (shape, vals));
    }
    out
}

pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den).sqrt()
}

pub fn fixture_decoder() -> DecoderConfig {
    DecoderConfig { latent_channels: 8, num_channels: vec![16, 16, 32], num_res_blocks: vec![2, 2, 2], out_channels: 1, norm_num_groups: 8, norm_eps: 1e-6 }
}

pub fn fixture_unet() -> UnetConfig {
    UnetConfig {
        in_channels: 8,
        out_channels: 8,
        num_channels: vec![16, 32, 32],
        attention_levels: vec![false, true, true],
        num_head_channels: vec![0, 16, 16],
        num_res_blocks: vec![2, 2, 2],
        norm_num_groups: 8,
        norm_eps: 1e-6,
        attention_output_projection: false,
    }
}

pub fn config(decoder: bool, unet: bool, scale: f32, latent: [u32; 4]) -> ModelConfig {
    ModelConfig {
        decoder: decoder.then(fixture_decoder),
        encoder: None,
        unet: unet.then(fixture_unet),
        scheduler: SchedulerConfig::bundle(),
        scale_factor: scale,
        latent_shape: latent,
        geometry: OutputGeometry::bundle(),
        provenance: Provenance::default(),
    }
}

/// A blob holding exactly the tensors `cfg` needs, taken from the MONAI fixture checkpoints.
pub fn fixture_blob(cfg: &ModelConfig) -> Blob {
    fixture_blob_dtype(cfg, DType::F32)
}

/// Like `fixture_blob`, storing every tensor as `dtype`.
pub fn fixture_blob_dtype(cfg: &ModelConfig, dtype: DType) -> Blob {
    let mut all = HashMap::new();
    for (k, v) in safetensors("autoencoder/autoencoder.safetensors") {
        all.insert(format!("autoencoder.{k}"), v);
    }
    for (k, v) in safetensors("unet/unet.safetensors") {
        all.insert(format!("unet.{k}"), v);
    }
    let tensors: Vec<TensorData> = expected_tensors(cfg)
        .iter()
        .map(|spec| {
            let (shape, data) = all.get(&spec.name).unwrap_or_else(|| panic!("fixture lacks {}", spec.name));
            assert_eq!(shape, &spec.shape, "{}", spec.name);
            TensorData::from_f32(spec.name.clone(), shape.clone(), data, dtype)
        })
        .collect();
    let mut bytes = Vec::new();
    write_blob(&mut bytes, cfg, &tensors).unwrap();
    Blob::from_bytes(bytes).unwrap()
}
