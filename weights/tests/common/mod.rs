//! Shared helpers for the blob tests: small configs, deterministic tensors, and a way to craft a
//! modified blob (re-encoded header, same data, recomputed checksum) so that the check under test
//! is the one that fires.

#![allow(dead_code)]

use ldm_weights::format::{self, Header, ALIGN, CHECKSUM_LEN, PREFIX_LEN};
use ldm_weights::*;

/// A model with all three networks, small enough that its blob is ~60 KB.
pub fn small_config() -> ModelConfig {
    ModelConfig {
        decoder: Some(DecoderConfig {
            latent_channels: 2,
            num_channels: vec![4, 8],
            num_res_blocks: vec![1, 1],
            out_channels: 1,
            norm_num_groups: 2,
            norm_eps: 1e-6,
        }),
        encoder: Some(EncoderConfig {
            in_channels: 1,
            num_channels: vec![4, 8],
            num_res_blocks: vec![1, 1],
            latent_channels: 2,
            norm_num_groups: 2,
            norm_eps: 1e-6,
        }),
        unet: Some(UnetConfig {
            in_channels: 2,
            out_channels: 2,
            num_channels: vec![4, 8],
            attention_levels: vec![false, true],
            num_head_channels: vec![0, 4],
            num_res_blocks: vec![1, 1],
            norm_num_groups: 2,
            norm_eps: 1e-6,
            attention_output_projection: false,
        }),
        scheduler: SchedulerConfig::bundle(),
        scale_factor: 0.5,
        latent_shape: [2, 4, 6, 2],
        geometry: OutputGeometry::bundle(),
        provenance: Provenance {
            producer: "ldm-weights tests".into(),
            data: "synthetic".into(),
            steps: 7,
            date: "2026-11-25".into(),
        },
    }
}

/// A decoder-only model whose blob is ~2.5 KB (for exhaustive truncation and flip tests).
pub fn tiny_config() -> ModelConfig {
    let mut c = small_config();
    c.encoder = None;
    c.unet = None;
    c.decoder = Some(DecoderConfig {
        latent_channels: 2,
        num_channels: vec![2],
        num_res_blocks: vec![0],
        out_channels: 1,
        norm_num_groups: 1,
        norm_eps: 1e-6,
    });
    // Short provenance: the crafted-header tests splice longer headers into the padding before
    // the first tensor, which must have room for them.
    c.provenance.data = String::new();
    c.provenance.date = String::new();
    c
}

/// Deterministic values in [-1, 1) from a seed (xorshift64*).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The f32 values of every tensor `cfg` requires, in canonical order.
pub fn reference_values(cfg: &ModelConfig) -> Vec<(TensorSpec, Vec<f32>)> {
    expected_tensors(cfg)
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let v = values(i as u64 + 1, s.numel());
            (s, v)
        })
        .collect()
}

pub fn tensors(cfg: &ModelConfig, dtype: DType) -> Vec<TensorData> {
    reference_values(cfg)
        .into_iter()
        .map(|(s, v)| TensorData::from_f32(s.name, s.shape, &v, dtype))
        .collect()
}

pub fn blob_bytes(cfg: &ModelConfig, dtype: DType) -> Vec<u8> {
    let mut out = Vec::new();
    write_blob(&mut out, cfg, &tensors(cfg, dtype)).unwrap();
    out
}

/// The decoded raw header of a blob and where its data region starts.
pub fn raw_header(bytes: &[u8]) -> (Header, u64) {
    let header_len = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    let (h, used) = format::decode_header(&bytes[20..20 + header_len as usize]).unwrap();
    assert_eq!(used as u64, header_len);
    (h, format::align_up(PREFIX_LEN + header_len).unwrap())
}

/// Recomputes the trailing checksum in place.
pub fn reseal(bytes: &mut [u8]) {
    let end = bytes.len() - CHECKSUM_LEN as usize;
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..end]);
    bytes[end..].copy_from_slice(&sum.to_le_bytes());
}

/// Rebuilds `orig` with `header` in place of its header: the data region is copied unchanged to
/// the same offsets (the new header must fit before it), `tail` is appended after the data at the
/// next 256-byte boundary (its offset is returned), and the checksum is recomputed.
pub fn rebuild_with_tail(orig: &[u8], header: &Header, tail: &[u8]) -> (Vec<u8>, u64) {
    let (_, data_start) = raw_header(orig);
    let data_end = orig.len() - CHECKSUM_LEN as usize;
    let hb = format::encode_header(header).unwrap();
    assert!(
        PREFIX_LEN + hb.len() as u64 <= data_start,
        "crafted header ({} bytes) does not fit before the data",
        hb.len()
    );
    let mut out = orig[..12].to_vec();
    out.extend_from_slice(&(hb.len() as u64).to_le_bytes());
    out.extend_from_slice(&hb);
    out.resize(data_start as usize, 0);
    out.extend_from_slice(&orig[data_start as usize..data_end]);
    let tail_offset = format::align_up(out.len() as u64).unwrap();
    if !tail.is_empty() {
        out.resize(tail_offset as usize, 0);
        out.extend_from_slice(tail);
    }
    out.extend_from_slice(&[0u8; CHECKSUM_LEN as usize]);
    reseal(&mut out);
    assert_eq!(tail_offset % ALIGN, 0);
    (out, tail_offset)
}

pub fn rebuild(orig: &[u8], header: &Header) -> Vec<u8> {
    rebuild_with_tail(orig, header, &[]).0
}

/// Header bytes with the table count (or one entry's fields) replaced by a raw varint.
pub fn header_with_raw_table(header: &Header, raw_table: &[u8]) -> Vec<u8> {
    let mut no_table = header.clone();
    no_table.tensors.clear();
    let mut hb = ldm_weights::format::encode_header(&no_table).unwrap();
    assert_eq!(hb.pop(), Some(0), "empty table count is one zero byte");
    hb.extend_from_slice(raw_table);
    hb
}

/// `bytes` with its header replaced by `hb` (must fit before the data) and resealed.
pub fn splice_header(bytes: &[u8], hb: &[u8]) -> Vec<u8> {
    let (_, data_start) = raw_header(bytes);
    assert!(20 + hb.len() as u64 <= data_start);
    let mut b = bytes[..12].to_vec();
    b.extend_from_slice(&(hb.len() as u64).to_le_bytes());
    b.extend_from_slice(hb);
    b.resize(data_start as usize, 0);
    b.extend_from_slice(&bytes[data_start as usize..]);
    reseal(&mut b);
    b
}

pub fn varint_u64(v: u64) -> Vec<u8> {
    let mut out = vec![253u8];
    out.extend_from_slice(&v.to_le_bytes());
    out
}
