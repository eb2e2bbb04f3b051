//! The architecture of the networks being converted: the bundle preset, or a small JSON file
//! mirroring the bundle's own config (`autoencoder_def` / `network_def` sections with MONAI's
//! constructor argument names), validated into the blob's `ModelConfig` pieces.


use std::path::Path;

use ldm_weights::{DecoderConfig, EncoderConfig, SchedulerConfig, UnetConfig};
use serde::Deserialize;
use thiserror::Error;

mod autoencoder;
mod network;
mod scheduler;

use autoencoder::AutoencoderDef;
use network::NetworkDef;
use scheduler::SchedulerDef;

#[derive(Debug, Error)]
pub enum ArchError {
    #[error("cannot read config {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("config {path} is not valid: {cause}")]
    Json {
        path: String,
        cause: serde_json::Error,
    },
    #[error("config {section}: {msg}")]
    Invalid { section: &'static str, msg: String },
}

/// What a config file or preset says about the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    pub decoder: Option<DecoderConfig>,
    pub encoder: Option<EncoderConfig>,
    pub unet: Option<UnetConfig>,
    pub scheduler: SchedulerConfig,
    pub latent_shape: Option<[u32; 4]>,
    pub scale_factor: Option<f32>,
}

impl Architecture {
    /// The MONAI "BraTS MRI 3D latent diffusion" bundle.
    pub fn bundle() -> Self {
        Architecture {
            decoder: Some(DecoderConfig::bundle()),
            encoder: Some(EncoderConfig::bundle()),
            unet: Some(UnetConfig::bundle()),
            scheduler: SchedulerConfig::bundle(),
            latent_shape: Some([8, 36, 44, 28]),
            scale_factor: Some(1.0),
        }
    }

    /// The bundle's 4-channel layout: latent 4 x 48 x 48 x 32, UNet channels [128, 256, 512]
    /// with head channels [0, 32, 32], the same autoencoder and scheduler.
    pub fn bundle_latent4() -> Self {
        let mut decoder = DecoderConfig::bundle();
        decoder.latent_channels = 4;
        let mut encoder = EncoderConfig::bundle();
        encoder.latent_channels = 4;
        let mut unet = UnetConfig::bundle();
        unet.in_channels = 4;
        unet.out_channels = 4;
        unet.num_channels = vec![128, 256, 512];
        unet.num_head_channels = vec![0, 32, 32];
        Architecture {
            decoder: Some(decoder),
            encoder: Some(encoder),
            unet: Some(unet),
            scheduler: SchedulerConfig::bundle(),
            latent_shape: Some([4, 48, 48, 32]),
            scale_factor: Some(1.0),
        }
    }

    /// Parse and validate a JSON config file.
    pub fn from_file(path: &Path) -> Result<Self, ArchError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ArchError::Io {
            path: shown.clone(),
            cause,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            ArchError::Json { cause, .. } => ArchError::Json { path: shown, cause },
            other => other,
        })
    }

    /// Parse and validate JSON text (see `from_file`).
    pub fn from_json(text: &str) -> Result<Self, ArchError> {
        let file: ConfigFile = serde_json::from_str(text).map_err(|cause| ArchError::Json {
            path: "<text>".into(),
            cause,
        })?;
        Self::from_sections(file)
    }

    /// Validate sections already resolved from a MONAI bundle config (`autoencoder_def`,
    /// `network_def`, `noise_scheduler`, `latent_shape`, `scale_factor`); `source` names the
    /// file(s) they came from in messages.
    pub fn from_value(value: serde_json::Value, source: &str) -> Result<Self, ArchError> {
        let file: ConfigFile = serde_json::from_value(value).map_err(|cause| ArchError::Json {
            path: source.into(),
            cause,
        })?;
        Self::from_sections(file)
    }

    fn from_sections(file: ConfigFile) -> Result<Self, ArchError> {
        let (decoder, encoder) = match file.autoencoder_def {
            Some(a) => {
                let (d, e) = a.validate()?;
                (Some(d), Some(e))
            }
            None => (None, None),
        };
        let unet = file.network_def.map(|n| n.validate()).transpose()?;
        let scheduler = match file.noise_scheduler {
            Some(s) => s.validate()?,
            None => SchedulerConfig::bundle(),
        };
        if let Some(s) = file.scale_factor {
            if !(s.is_finite() && s > 0.0) {
                return Err(invalid(
                    "scale_factor",
                    format!("must be a positive finite number, got {s}"),
                ));
            }
        }
        Ok(Architecture {
            decoder,
            encoder,
            unet,
            scheduler,
            latent_shape: file.latent_shape,
            scale_factor: file.scale_factor,
        })
    }
}

fn invalid(section: &'static str, msg: impl Into<String>) -> ArchError {
    ArchError::Invalid {
        section,
        msg: msg.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(alias = "autoencoder")]
    autoencoder_def: Option<AutoencoderDef>,
    #[serde(alias = "unet", alias = "diffusion_def")]
    network_def: Option<NetworkDef>,
    #[serde(alias = "scheduler")]
    noise_scheduler: Option<SchedulerDef>,
    latent_shape: Option<[u32; 4]>,
    scale_factor: Option<f32>,
}

/// An int for every level, or one int for all (as MONAI accepts).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum PerLevel<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerLevel<T> {
    fn expand(
        self,
        levels: usize,
        section: &'static str,
        field: &str,
    ) -> Result<Vec<T>, ArchError> {
        match self {
            PerLevel::One(v) => Ok(vec![v; levels]),
            PerLevel::Each(v) if v.len() == levels => Ok(v),
            PerLevel::Each(v) => Err(invalid(
                section,
                format!(
                    "{field} has {} entries but num_channels has {levels}",
                    v.len()
                ),
            )),
        }
    }
}

fn check_common(
    section: &'static str,
    spatial_dims: Option<u32>,
    channels: &[u32],
    groups: u32,
    eps: f32,
) -> Result<(), ArchError> {
    if let Some(d) = spatial_dims {
        if d != 3 {
            return Err(invalid(
                section,
                format!("spatial_dims {d}: only 3-D networks are supported"),
            ));
        }
    }
    if channels.is_empty() {
        return Err(invalid(section, "num_channels is empty"));
    }
    if groups == 0 {
        return Err(invalid(section, "norm_num_groups is 0"));
    }
    if let Some(c) = channels.iter().find(|&&c| c == 0 || c % groups != 0) {
        return Err(invalid(
            section,
            format!("channel count {c} is not a positive multiple of norm_num_groups {groups}"),
        ));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(invalid(
            section,
            format!("norm_eps must be positive, got {eps}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldm_weights::{BetaSchedule, PredictionType, SamplerKind, VarianceType};

    #[test]
    fn bundle_json_matches_preset() {
        // The example file mirrors the bundle's own config sections.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/configs/bundle.json");
        assert_eq!(
            Architecture::from_file(&path).unwrap(),
            Architecture::bundle()
        );
    }

    /// The preset stores what the bundle's inference config says: DDIM 50 steps without the
    /// x0 clamp; a MONAI section's omissions take MONAI's defaults, the shorthand's the bundle's.
    #[test]
    fn scheduler_sections_follow_monai_names_and_defaults() {
        let b = Architecture::bundle().scheduler;
        assert_eq!(
            (b.default_sampler, b.default_steps, b.ddim.clip_sample),
            (SamplerKind::Ddim, 50, false)
        );
        let s = |json: &str| Architecture::from_json(json).unwrap().scheduler;
        let m = s(
            r#"{"noise_scheduler": {"_target_": "generative.networks.schedulers.DDIMScheduler"}}"#,
        );
        assert_eq!(
            (m.beta_schedule, m.beta_start, m.beta_end),
            (BetaSchedule::Linear, 1e-4, 2e-2)
        );
        assert!(m.ddim.clip_sample && m.ddim.set_alpha_to_one);
        let p = s(
            r#"{"noise_scheduler": {"_target_": "monai.networks.schedulers.PNDMScheduler",
            "schedule": "cosine", "prediction_type": "v_prediction", "skip_prk_steps": true,
            "steps_offset": 1, "num_inference_steps": 20}}"#,
        );
        assert_eq!(
            (p.default_sampler, p.default_steps, p.prediction_type),
            (SamplerKind::Pndm, 20, PredictionType::VPrediction)
        );
        assert_eq!(p.beta_schedule, BetaSchedule::Cosine { s: 8e-3 });
        assert!(p.pndm.skip_prk_steps && p.pndm.steps_offset == 1 && !p.pndm.set_alpha_to_one);
        let d = s(
            r#"{"noise_scheduler": {"_target_": "DDPMScheduler", "variance_type": "fixed_large", "clip_sample": false}}"#,
        );
        assert_eq!(
            (d.ddpm.variance_type, d.ddpm.clip_sample),
            (VarianceType::FixedLarge, false)
        );
        let short = s(r#"{"noise_scheduler": {"sampler": "pndm"}}"#);
        assert_eq!(
            (short.beta_schedule, short.default_sampler),
            (BetaSchedule::ScaledLinear, SamplerKind::Pndm)
        );
    }

    #[test]
    fn rejects_bad_configs_with_reasons() {
        let e = Architecture::from_json(
            r#"{"network_def": {"in_channels": 8, "out_channels": 8, "num_channels": [16, 32],
            "attention_levels": [false, true], "num_head_channels": 5, "norm_num_groups": 8}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("num_head_channels 5"), "{e}");
        let e = Architecture::from_json(r#"{"autoencoder_def": {"latent_channels": 8, "num_channels": [16, 20], "norm_num_groups": 8}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("channel count 20"), "{e}");
        let e = Architecture::from_json(
            r#"{"autoencoder_def": {"latent_channels": 8, "num_channels": [16], "typo": 1}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("typo"), "{e}");
    }
}
