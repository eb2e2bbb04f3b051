//! The fixture networks' configurations, read from their case.json files
//! (tests/fixtures/monai/{autoencoder,unet,pipeline}/case.json).

use crate::files::monai;
use ldm_weights::{
    BetaSchedule, DdimSettings, DdpmSettings, DecoderConfig, EncoderConfig, ModelConfig, OutputGeometry, PndmSettings,
    PredictionType, Provenance, SamplerKind, SchedulerConfig, UnetConfig,
};
use serde_json::Value;

/// MONAI's `norm_eps` default, used where a case.json does not set it.
const MONAI_NORM_EPS: f32 = 1e-6;

/// The parsed `tests/fixtures/monai/<dir>/case.json`.
pub fn case(dir: &str) -> Value {
    let path = monai(dir).join("case.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn field<'a>(v: &'a Value, dir: &str, key: &str) -> &'a Value {
    v.get(key).unwrap_or_else(|| panic!("{dir}/case.json: no '{key}'"))
}

fn u32_of(v: &Value, dir: &str, key: &str) -> u32 {
    field(v, dir, key)
        .as_u64()
        .and_then(|x| u32::try_from(x).ok())
        .unwrap_or_else(|| panic!("{dir}/case.json: '{key}' is not a u32"))
}

fn f32_of(v: &Value, dir: &str, key: &str) -> f32 {
    field(v, dir, key)
        .as_f64()
        .unwrap_or_else(|| panic!("{dir}/case.json: '{key}' is not a number")) as f32
}

fn u32s(v: &Value, dir: &str, key: &str) -> Vec<u32> {
    field(v, dir, key)
        .as_array()
        .unwrap_or_else(|| panic!("{dir}/case.json: '{key}' is not an array"))
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .unwrap_or_else(|| panic!("{dir}/case.json: '{key}' holds {x}"))
        })
        .collect()
}

fn norm_eps(v: &Value, dir: &str) -> f32 {
    if v.get("norm_eps").is_some() {
        f32_of(v, dir, "norm_eps")
    } else {
        MONAI_NORM_EPS
    }
}

/// (kwargs, channels per level, res blocks per level) of a network's case.json.
fn levels(dir: &str) -> (Value, Vec<u32>, Vec<u32>) {
    let k = field(&case(dir), dir, "kwargs").clone();
    let ch = u32s(&k, dir, "num_channels");
    let nres = vec![u32_of(&k, dir, "num_res_blocks"); ch.len()];
    (k, ch, nres)
}

/// The fixture autoencoder's decoder (autoencoder/case.json).
pub fn fixture_decoder() -> DecoderConfig {
    let d = "autoencoder";
    let (k, num_channels, num_res_blocks) = levels(d);
    DecoderConfig {
        latent_channels: u32_of(&k, d, "latent_channels"),
        num_channels,
        num_res_blocks,
        out_channels: u32_of(&k, d, "out_channels"),
        norm_num_groups: u32_of(&k, d, "norm_num_groups"),
        norm_eps: norm_eps(&k, d),
    }
}

/// The fixture autoencoder's encoder (autoencoder/case.json).
pub fn fixture_encoder() -> EncoderConfig {
    let d = "autoencoder";
    let (k, num_channels, num_res_blocks) = levels(d);
    EncoderConfig {
        in_channels: u32_of(&k, d, "in_channels"),
        num_channels,
        num_res_blocks,
        latent_channels: u32_of(&k, d, "latent_channels"),
        norm_num_groups: u32_of(&k, d, "norm_num_groups"),
        norm_eps: norm_eps(&k, d),
    }
}

/// The fixture diffusion UNet (unet/case.json), `proj_attn` not applied (Generative 0.2.3).
pub fn fixture_unet() -> UnetConfig {
    let d = "unet";
    let (k, num_channels, num_res_blocks) = levels(d);
    let attention_levels = field(&k, d, "attention_levels")
        .as_array()
        .unwrap_or_else(|| panic!("{d}/case.json: 'attention_levels' is not an array"))
        .iter()
        .map(|b| b.as_bool().unwrap_or_else(|| panic!("{d}/case.json: 'attention_levels' holds {b}")))
        .collect();
    UnetConfig {
        in_channels: u32_of(&k, d, "in_channels"),
        out_channels: u32_of(&k, d, "out_channels"),
        num_channels,
        attention_levels,
        num_head_channels: u32s(&k, d, "num_head_channels"),
        num_res_blocks,
        norm_num_groups: u32_of(&k, d, "norm_num_groups"),
        norm_eps: norm_eps(&k, d),
        attention_output_projection: false,
    }
}

/// The pipeline fixture's scheduler (pipeline/case.json): scaled-linear betas, DDIM 50 steps.
pub fn fixture_scheduler() -> SchedulerConfig {
    let d = "pipeline";
    let s = field(&case(d), d, "scheduler").clone();
    let schedule = field(&s, d, "schedule");
    assert_eq!(schedule, "scaled_linear_beta", "{d}/case.json: unexpected schedule");
    let clip = field(&s, d, "clip_sample")
        .as_bool()
        .unwrap_or_else(|| panic!("{d}/case.json: 'clip_sample' is not a bool"));
    SchedulerConfig {
        num_train_timesteps: u32_of(&s, d, "num_train_timesteps"),
        beta_schedule: BetaSchedule::ScaledLinear,
        beta_start: f32_of(&s, d, "beta_start"),
        beta_end: f32_of(&s, d, "beta_end"),
        prediction_type: PredictionType::Epsilon,
        ddpm: DdpmSettings { clip_sample: clip, ..DdpmSettings::monai_default() },
        ddim: DdimSettings { clip_sample: clip, ..DdimSettings::monai_default() },
        pndm: PndmSettings::monai_default(),
        default_sampler: SamplerKind::Ddim,
        default_steps: 50,
    }
}

/// The whole fixture model: decoder and UNet, the pipeline's scheduler, scale factor 1.0 (the
/// bundle sampler's semantics), latent [8, 8, 8, 4] (the pipeline fixture's noise shape), the
/// bundle's output geometry.
pub fn fixture_config() -> ModelConfig {
    ModelConfig {
        decoder: Some(fixture_decoder()),
        encoder: None,
        unet: Some(fixture_unet()),
        scheduler: fixture_scheduler(),
        scale_factor: 1.0,
        latent_shape: [8, 8, 8, 4],
        geometry: OutputGeometry::bundle(),
        provenance: Provenance {
            producer: "brats-ldm tests".into(),
            data: "MONAI generative 0.2.3 fixture checkpoints (random weights)".into(),
            steps: 0,
            date: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_match_the_case_files() {
        let dec = fixture_decoder();
        assert_eq!(
            (dec.latent_channels, dec.num_channels.clone(), dec.norm_num_groups),
            (8, vec![16, 16, 32], 8)
        );
        let enc = fixture_encoder();
        assert_eq!((enc.in_channels, enc.num_res_blocks.clone()), (1, vec![2, 2, 2]));
        let unet = fixture_unet();
        assert_eq!(unet.num_channels, vec![16, 32, 32]);
        assert_eq!(unet.attention_levels, vec![false, true, true]);
        assert_eq!(unet.num_head_channels, vec![0, 16, 16]);
        assert_eq!(unet.norm_eps, 1e-6);
        let s = fixture_scheduler();
        assert_eq!(
            (s.num_train_timesteps, s.beta_start, s.beta_end, s.ddim.clip_sample, s.ddpm.clip_sample),
            (1000, 0.0015, 0.0195, false, false)
        );
        assert_eq!(fixture_config().latent_shape, [8, 8, 8, 4]);
    }
}
