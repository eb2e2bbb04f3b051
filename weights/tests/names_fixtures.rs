//! `expected_tensors` against the MONAI fixtures: the key set and shapes listed in each fixture's
//! safetensors header must equal what the fixture's case.json config requires (the UNet's
//! `proj_attn` tensors excepted when the output projection is not applied).

use std::collections::BTreeMap;

use ldm_test_support::{case, fixture_decoder, fixture_encoder, fixture_unet, monai, read_safetensors};
use ldm_weights::*;

/// Key -> shape of every tensor in a fixture safetensors file.
fn safetensors_shapes(rel: &str) -> BTreeMap<String, Vec<usize>> {
    read_safetensors(&monai(rel)).into_iter().map(|(k, (shape, _))| (k, shape)).collect()
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
    let mut cfg = base_config();
    cfg.decoder = Some(fixture_decoder());
    cfg.encoder = Some(fixture_encoder());
    cfg
}

fn unet_config(proj: bool) -> ModelConfig {
    let mut cfg = base_config();
    cfg.unet = Some(UnetConfig { attention_output_projection: proj, ..fixture_unet() });
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
    let case = case("autoencoder");
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
    let case = case("unet");
    assert_eq!(parameter_counts(&cfg).unet, case["parameters"].as_u64().unwrap());
}

#[test]
fn bundle_parameter_counts_match_design() {
    // docs/architecture.md (bundle sizes): 21.0 M VAE parameters, 189.3 M UNet parameters used (+1.9 M unused proj_attn).
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
