//! Test support for the `generate` and `bench` end-to-end tests: builds a model blob from the
//! MONAI fixture checkpoints (tests/fixtures/monai/{autoencoder,unet}/*.safetensors) with the
//! configuration their case.json files name, and runs the CLI binary.
#![allow(dead_code)]

use ldm_weights::{
    BetaSchedule, DType, DecoderConfig, ModelConfig, OutputGeometry, Provenance, SamplerKind,
    SchedulerConfig, TensorData, UnetConfig,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monai")
}

/// The fixture networks (see autoencoder/case.json, unet/case.json, pipeline/case.json): the
/// bundle's sampler, DDIM 50 steps, no clipping, scale factor 1.0, latent [8, 8, 8, 4].
pub fn fixture_config() -> ModelConfig {
    ModelConfig {
        decoder: Some(DecoderConfig {
            latent_channels: 8,
            num_channels: vec![16, 16, 32],
            num_res_blocks: vec![2, 2, 2],
            out_channels: 1,
            norm_num_groups: 8,
            norm_eps: 1e-6,
        }),
        encoder: None,
        unet: Some(UnetConfig {
            in_channels: 8,
            out_channels: 8,
            num_channels: vec![16, 32, 32],
            attention_levels: vec![false, true, true],
            num_head_channels: vec![0, 16, 16],
            num_res_blocks: vec![2, 2, 2],
            norm_num_groups: 8,
            norm_eps: 1e-6,
            attention_output_projection: false,
        }),
        scheduler: SchedulerConfig {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::ScaledLinear,
            beta_start: 0.0015,
            beta_end: 0.0195,
            clip_sample: false,
            default_sampler: SamplerKind::Ddim,
            default_steps: 50,
        },
        scale_factor: 1.0,
        latent_shape: [8, 8, 8, 4],
        geometry: OutputGeometry::bundle(),
        provenance: Provenance {
            producer: "brats-ldm generate tests".into(),
            data: "MONAI fixture checkpoints (random weights)".into(),
            steps: 0,
            date: String::new(),
        },
    }
}

/// Writes the fixture blob to `dir/fixture.blob` and returns its path.
pub fn fixture_blob(dir: &Path) -> PathBuf {
    fixture_blob_with(dir, "fixture.blob", fixture_config())
}

/// Writes the fixture networks' tensors with `cfg` (e.g. another output geometry) to `dir/name`.
pub fn fixture_blob_with(dir: &Path, name: &str, cfg: ModelConfig) -> PathBuf {
    let ae = std::fs::read(fixtures().join("autoencoder/autoencoder.safetensors")).unwrap();
    let unet = std::fs::read(fixtures().join("unet/unet.safetensors")).unwrap();
    let ae = safetensors::SafeTensors::deserialize(&ae).unwrap();
    let unet = safetensors::SafeTensors::deserialize(&unet).unwrap();
    let tensors: Vec<TensorData> = ldm_weights::expected_tensors(&cfg)
        .into_iter()
        .map(|spec| {
            let (file, key) = match spec.name.split_once('.') {
                Some(("autoencoder", k)) => (&ae, k),
                Some(("unet", k)) => (&unet, k),
                _ => panic!("unexpected tensor name {}", spec.name),
            };
            let view = file.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{key}");
            assert_eq!(view.shape(), spec.shape.as_slice(), "{key}");
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            TensorData::from_f32(spec.name.clone(), spec.shape.clone(), &values, DType::F32)
        })
        .collect();
    let path = dir.join(name);
    ldm_weights::write_blob_file(&path, &cfg, &tensors).unwrap();
    path
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_brats-ldm"));
    c.env_remove("BRATS_LDM_MODEL");
    c
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run with exactly one line on stderr containing every `needle`.
pub fn assert_one_line_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line, got: {err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "'{n}' missing from: {err}");
    }
}

pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x - *y) as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}
