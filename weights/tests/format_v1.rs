//! Format 1 blobs (before every scheduler option was recorded) still load: their scheduler comes
//! back in format 2's terms with format 1's sampling semantics (DDIM never clamps, DDPM clamps per
//! `clip_sample`, epsilon prediction), both for a crafted blob and for the shipped default model.

mod common;

use bincode::Encode;
use common::*;
use ldm_weights::format::{
    legacy_scheduler, version_word, LegacyBetaSchedule, LegacySamplerKind, LegacySchedulerConfig,
    TensorEntry,
};
use ldm_weights::*;

/// Format 1's `ModelConfig`: format 2's with the old scheduler section.
#[derive(Encode)]
struct ModelConfigV1 {
    decoder: Option<DecoderConfig>,
    encoder: Option<EncoderConfig>,
    unet: Option<UnetConfig>,
    scheduler: LegacySchedulerConfig,
    scale_factor: f32,
    latent_shape: [u32; 4],
    geometry: OutputGeometry,
    provenance: Provenance,
}

#[derive(Encode)]
struct HeaderV1 {
    config: ModelConfigV1,
    tensors: Vec<TensorEntry>,
}

/// `bytes` (a format-2 blob) rewritten as format 1 with `old` as its scheduler, same data.
fn as_format_1(bytes: &[u8], old: &LegacySchedulerConfig) -> Vec<u8> {
    let (h, data_start) = raw_header(bytes);
    let c = h.config;
    let v1 = HeaderV1 {
        config: ModelConfigV1 {
            decoder: c.decoder,
            encoder: c.encoder,
            unet: c.unet,
            scheduler: old.clone(),
            scale_factor: c.scale_factor,
            latent_shape: c.latent_shape,
            geometry: c.geometry,
            provenance: c.provenance,
        },
        tensors: h.tensors,
    };
    let hb = bincode::encode_to_vec(&v1, bincode::config::standard()).unwrap();
    assert!(
        20 + hb.len() as u64 <= data_start,
        "format-1 header fits before the data"
    );
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(&version_word(1, 0).to_le_bytes());
    out.extend_from_slice(&(hb.len() as u64).to_le_bytes());
    out.extend_from_slice(&hb);
    out.resize(data_start as usize, 0);
    out.extend_from_slice(&bytes[data_start as usize..]);
    reseal(&mut out);
    out
}

#[test]
fn a_format_1_blob_loads_with_its_old_sampling_semantics() {
    for (sampler, clip) in [
        (LegacySamplerKind::Ddim, true),
        (LegacySamplerKind::Ddpm, false),
        (LegacySamplerKind::Ddpm, true),
    ] {
        let old = LegacySchedulerConfig {
            num_train_timesteps: 1000,
            beta_schedule: LegacyBetaSchedule::ScaledLinear,
            beta_start: 0.0015,
            beta_end: 0.0195,
            clip_sample: clip,
            default_sampler: sampler,
            default_steps: if sampler == LegacySamplerKind::Ddim {
                50
            } else {
                1000
            },
        };
        let mut cfg = small_config();
        cfg.scheduler = legacy_scheduler(old.clone());
        let v2 = blob_bytes(&cfg, DType::F32);
        let v1 = as_format_1(&v2, &old);
        let blob = Blob::from_bytes(v1).unwrap();
        assert_eq!(blob.format_version(), (1, 0));
        let s = &blob.config().scheduler;
        assert_eq!(s, &cfg.scheduler);
        assert!(
            !s.ddim.clip_sample,
            "format-1 readers never clamped in DDIM"
        );
        assert_eq!(s.ddpm.clip_sample, clip);
        assert_eq!(
            (s.prediction_type, s.ddpm.variance_type),
            (PredictionType::Epsilon, VarianceType::FixedSmall)
        );
        assert!(s.ddim.set_alpha_to_one && s.ddim.steps_offset == 0);
        // Same tensors, same bytes.
        let v2_blob = Blob::from_bytes(v2.clone()).unwrap();
        for t in v2_blob.tensors() {
            assert_eq!(
                blob.tensor(&t.name).unwrap().to_f32_vec(),
                v2_blob.tensor(&t.name).unwrap().to_f32_vec()
            );
        }
    }
}

#[test]
fn a_corrupt_format_1_scheduler_is_a_decode_error() {
    let old = LegacySchedulerConfig {
        num_train_timesteps: 1000,
        beta_schedule: LegacyBetaSchedule::Linear,
        beta_start: 0.0015,
        beta_end: 0.0195,
        clip_sample: true,
        default_sampler: LegacySamplerKind::Ddim,
        default_steps: 50,
    };
    let mut cfg = small_config();
    cfg.scheduler = legacy_scheduler(old.clone());
    let mut v1 = as_format_1(&blob_bytes(&cfg, DType::F32), &old);
    // Read as format 2, the old scheduler section is misread and the header does not decode to
    // a valid model.
    v1[8..12].copy_from_slice(&version_word(2, 0).to_le_bytes());
    reseal(&mut v1);
    assert!(Blob::from_bytes(v1).is_err());
}

/// The shipped default model is a format-1 blob: it loads, and samples with DDPM over all 1000
/// steps without clamping, as it always did.
#[test]
fn the_shipped_default_model_still_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("default/brats-ldm-default.blob");
    let blob = Blob::open(&path).unwrap();
    assert_eq!(blob.format_version(), (1, 0));
    let s = &blob.config().scheduler;
    assert_eq!(
        (s.default_sampler, s.default_steps),
        (SamplerKind::Ddpm, 1000)
    );
    assert!(!s.ddpm.clip_sample && !s.ddim.clip_sample);
    assert_eq!(s.prediction_type, PredictionType::Epsilon);
}
