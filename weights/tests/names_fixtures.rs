//! `expected_tensors` against the MONAI fixtures: the key set and shapes listed in each fixture's
//! safetensors header must equal what the fixture's case.json config requires (the UNet's
//! `proj_attn` tensors excepted when the output projection is not applied).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ldm_weights::*;
use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/monai")
        .join(rel)
}

/// Key -> shape from a safetensors file's JSON header (8-byte LE length + JSON).
fn safetensors_shapes(rel: &str) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(fixture(rel)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(k, v)| {
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), shape)
        })
        .collect()
}

fn kwargs(rel: &str) -> Value {
    let case: Value = serde_json::from_slice(&std::fs::read(fixture(rel)).unwrap()).unwrap();
    case["kwargs"].clone()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn base_config() -> ModelConfig {
    ModelConfig {
        decoder: None,
        encoder: None,
        unet: None,
        scheduler: SchedulerConfig::bundle(),
        scale_factor: 1.0,
        latent_shape: [8, 4, 4, 4],
        geometry: OutputGeometry::bundle(),
        provenance: Provenance::default(),
    }
}

fn autoencoder_config() -> ModelConfig {
    let k = kwargs("autoencoder/case.json");
    let ch = u32s(&k["num_channels"]);
    let nres = vec![k["num_res_blocks"].as_u64().unwrap() as u32; ch.len()];
    let groups = k["norm_num_groups"].as_u64().unwrap() as u32;
    let lat = k["latent_channels"].as_u64().unwrap() as u32;
    let mut cfg = base_config();
    cfg.decoder = Some(DecoderConfig {
        latent_channels: lat,
        num_channels: ch.clone(),
        num_res_blocks: nres.clone(),
        out_channels: k["out_channels"].as_u64().unwrap() as u32,
        norm_num_groups: groups,
        norm_eps: 1e-6,
    });
    cfg.encoder = Some(EncoderConfig {
        in_channels: k["in_channels"].as_u64().unwrap() as u32,
        num_channels: ch,
        num_res_blocks: nres,
        latent_channels: lat,
        norm_num_groups: groups,
        norm_eps: 1e-6,
    });
    cfg
}

fn unet_config(proj: bool) -> ModelConfig {
    let k = kwargs("unet/case.json");
    let ch = u32s(&k["num_channels"]);
    let mut cfg = base_config();
    cfg.unet = Some(UnetConfig {
        in_channels: k["in_channels"].as_u64().unwrap() as u32,
        out_channels: k["out_channels"].as_u64().unwrap() as u32,
        num_res_blocks: vec![k["num_res_blocks"].as_u64().unwrap() as u32; ch.len()],
        attention_levels: k["attention_levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect(),
        num_head_channels: u32s(&k["num_head_channels"]),
        num_channels: ch,
        norm_num_groups: k["norm_num_groups"].as_u64().unwrap() as u32,
        norm_eps: 1e-6,
        attention_output_projection: proj,
    });
    cfg
}

fn as_map(specs: &[TensorSpec], prefix: &str) -> BTreeMap<String, Vec<usize>> {
    let mut m = BTreeMap::new();
    for s in specs {
        let key = s.name.strip_prefix(prefix).unwrap().to_string();
        assert!(m.insert(key, s.shape.clone()).is_none(), "duplicate name {}", s.name);
    }
    m
}

#[test]
fn autoencoder_keys_match_fixture() {
    let cfg = autoencoder_config();
    let expected = as_map(&expected_tensors(&cfg), "autoencoder.");
    let from_fixture = safetensors_shapes("autoencoder/autoencoder.safetensors");
    assert_eq!(expected, from_fixture);
    let case: Value = serde_json::from_slice(&std::fs::read(fixture("autoencoder/case.json")).unwrap()).unwrap();
    let pc = parameter_counts(&cfg);
    assert_eq!(pc.encoder + pc.decoder, case["parameters"].as_u64().unwrap());
    assert_eq!(pc.unet, 0);
}

#[test]
fn unet_keys_match_fixture_without_proj_attn() {
    let expected = as_map(&expected_tensors(&unet_config(false)), "unet.");
    let from_fixture: BTreeMap<_, _> = safetensors_shapes("unet/unet.safetensors")
        .into_iter()
        .filter(|(k, _)| !k.contains(".proj_attn."))
        .collect();
    assert_eq!(expected, from_fixture);
}

#[test]
fn unet_keys_match_fixture_with_proj_attn() {
    let cfg = unet_config(true);
    let expected = as_map(&expected_tensors(&cfg), "unet.");
    assert_eq!(expected, safetensors_shapes("unet/unet.safetensors"));
    let case: Value = serde_json::from_slice(&std::fs::read(fixture("unet/case.json")).unwrap()).unwrap();
    assert_eq!(parameter_counts(&cfg).unet, case["parameters"].as_u64().unwrap());
}

#[test]
fn bundle_parameter_counts_match_design() {
    // DESIGN.md: 21.0 M VAE parameters, 189.3 M UNet parameters used (+1.9 M unused proj_attn).
    let mut cfg = base_config();
    cfg.decoder = Some(DecoderConfig::bundle());
    cfg.encoder = Some(EncoderConfig::bundle());
    cfg.unet = Some(UnetConfig::bundle());
    let pc = parameter_counts(&cfg);
    let vae = (pc.encoder + pc.decoder) as f64 / 1e6;
    assert!((vae - 21.0).abs() < 0.05, "vae params {vae} M");
    let unet = pc.unet as f64 / 1e6;
    assert!((unet - 189.3).abs() < 0.05, "unet params {unet} M");
    let mut with_proj = UnetConfig::bundle();
    with_proj.attention_output_projection = true;
    cfg.unet = Some(with_proj);
    let extra = (parameter_counts(&cfg).unet - pc.unet) as f64 / 1e6;
    assert!((extra - 1.9).abs() < 0.05, "proj_attn params {extra} M");
}
