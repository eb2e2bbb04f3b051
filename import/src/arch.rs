//! The architecture of the networks being converted: the bundle preset, or a small JSON file
//! mirroring the bundle's own config (`autoencoder_def` / `network_def` sections with MONAI's
//! constructor argument names), validated into the blob's `ModelConfig` pieces.


use std::path::Path;

use ldm_weights::{
    BetaSchedule, DdimSettings, DdpmSettings, DecoderConfig, EncoderConfig, PndmSettings,
    PredictionType, SamplerKind, SchedulerConfig, UnetConfig, VarianceType,
};
use serde::Deserialize;
use thiserror::Error;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoencoderDef {
    #[serde(rename = "_target_")]
    _target: Option<String>,
    spatial_dims: Option<u32>,
    in_channels: Option<u32>,
    out_channels: Option<u32>,
    latent_channels: u32,
    /// monai >= 1.4 calls it `channels`.
    #[serde(alias = "channels")]
    num_channels: Vec<u32>,
    num_res_blocks: Option<PerLevel<u32>>,
    norm_num_groups: Option<u32>,
    norm_eps: Option<f32>,
    attention_levels: Option<Vec<bool>>,
    with_encoder_nonlocal_attn: Option<bool>,
    with_decoder_nonlocal_attn: Option<bool>,
    use_flash_attention: Option<bool>,
    use_checkpointing: Option<bool>,
    /// monai >= 1.4's name for `use_checkpointing`.
    use_checkpoint: Option<bool>,
    use_convtranspose: Option<bool>,
    /// monai >= 1.4 attention options; attention inside the autoencoder is refused anyway.
    include_fc: Option<bool>,
    use_combined_linear: Option<bool>,
}

const AE: &str = "autoencoder_def";
const NET: &str = "network_def";

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

impl AutoencoderDef {
    fn validate(self) -> Result<(DecoderConfig, EncoderConfig), ArchError> {
        let levels = self.num_channels.len();
        let groups = self.norm_num_groups.unwrap_or(32);
        let eps = self.norm_eps.unwrap_or(1e-6);
        check_common(AE, self.spatial_dims, &self.num_channels, groups, eps)?;
        if self
            .attention_levels
            .as_deref()
            .is_some_and(|a| a.iter().any(|&x| x))
        {
            return Err(invalid(AE, "attention inside the autoencoder is not supported (attention_levels must be all false)"));
        }
        if self.with_encoder_nonlocal_attn == Some(true)
            || self.with_decoder_nonlocal_attn == Some(true)
        {
            return Err(invalid(
                AE,
                "non-local attention inside the autoencoder is not supported",
            ));
        }
        if self.use_convtranspose == Some(true) {
            return Err(invalid(
                AE,
                "use_convtranspose is not supported (the bundle upsamples by nearest + conv)",
            ));
        }
        let _ = (
            self.use_flash_attention,
            self.use_checkpointing,
            self.use_checkpoint,
            self.include_fc,
            self.use_combined_linear,
        );
        if let Some(a) = &self.attention_levels {
            if a.len() != levels {
                return Err(invalid(
                    AE,
                    format!(
                        "attention_levels has {} entries but num_channels has {levels}",
                        a.len()
                    ),
                ));
            }
        }
        if self.latent_channels == 0 {
            return Err(invalid(AE, "latent_channels is 0"));
        }
        let res =
            self.num_res_blocks
                .unwrap_or(PerLevel::One(2))
                .expand(levels, AE, "num_res_blocks")?;
        let in_channels = self.in_channels.unwrap_or(1);
        let out_channels = self.out_channels.unwrap_or(1);
        if in_channels == 0 || out_channels == 0 {
            return Err(invalid(AE, "in_channels and out_channels must be positive"));
        }
        Ok((
            DecoderConfig {
                latent_channels: self.latent_channels,
                num_channels: self.num_channels.clone(),
                num_res_blocks: res.clone(),
                out_channels,
                norm_num_groups: groups,
                norm_eps: eps,
            },
            EncoderConfig {
                in_channels,
                num_channels: self.num_channels,
                num_res_blocks: res,
                latent_channels: self.latent_channels,
                norm_num_groups: groups,
                norm_eps: eps,
            },
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkDef {
    #[serde(rename = "_target_")]
    _target: Option<String>,
    spatial_dims: Option<u32>,
    in_channels: u32,
    out_channels: u32,
    /// monai >= 1.4 calls it `channels`.
    #[serde(alias = "channels")]
    num_channels: Vec<u32>,
    attention_levels: Vec<bool>,
    num_head_channels: PerLevel<u32>,
    num_res_blocks: Option<PerLevel<u32>>,
    norm_num_groups: Option<u32>,
    norm_eps: Option<f32>,
    /// Not a MONAI argument: whether attention applies `proj_attn` (generative 0.2.3: never).
    attention_output_projection: Option<bool>,
    /// monai >= 1.4's name for the same switch (its default there is true).
    include_fc: Option<bool>,
    /// monai >= 1.4: one fused q/k/v linear; not supported (checkpoints must hold to_q/to_k/to_v).
    use_combined_linear: Option<bool>,
    resblock_updown: Option<bool>,
    with_conditioning: Option<bool>,
    transformer_num_layers: Option<u32>,
    cross_attention_dim: Option<serde_json::Value>,
    num_class_embeds: Option<serde_json::Value>,
    upcast_attention: Option<bool>,
    use_flash_attention: Option<bool>,
    dropout_cattn: Option<f32>,
}

impl NetworkDef {
    fn validate(self) -> Result<UnetConfig, ArchError> {
        let levels = self.num_channels.len();
        let groups = self.norm_num_groups.unwrap_or(32);
        let eps = self.norm_eps.unwrap_or(1e-6);
        check_common(NET, self.spatial_dims, &self.num_channels, groups, eps)?;
        if self.attention_levels.len() != levels {
            return Err(invalid(
                NET,
                format!(
                    "attention_levels has {} entries but num_channels has {levels}",
                    self.attention_levels.len()
                ),
            ));
        }
        if self.resblock_updown == Some(true) {
            return Err(invalid(NET, "resblock_updown is not supported"));
        }
        if self.with_conditioning == Some(true)
            || self
                .cross_attention_dim
                .as_ref()
                .is_some_and(|v| !v.is_null())
            || self.num_class_embeds.as_ref().is_some_and(|v| !v.is_null())
        {
            return Err(invalid(NET, "conditioning (with_conditioning, cross_attention_dim, num_class_embeds) is not supported"));
        }
        if self.transformer_num_layers.is_some_and(|n| n != 1) {
            return Err(invalid(
                NET,
                "transformer_num_layers only matters with conditioning, which is not supported",
            ));
        }
        let _ = (
            self.upcast_attention,
            self.use_flash_attention,
            self.dropout_cattn,
        );
        if self.use_combined_linear == Some(true) {
            return Err(invalid(
                NET,
                "use_combined_linear (fused qkv) is not supported",
            ));
        }
        let projection = match (self.attention_output_projection, self.include_fc) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(
                    NET,
                    "attention_output_projection and include_fc disagree",
                ));
            }
            (a, b) => a.or(b).unwrap_or(false),
        };
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(invalid(
                NET,
                "in_channels and out_channels must be positive",
            ));
        }
        let mut heads = self
            .num_head_channels
            .expand(levels, NET, "num_head_channels")?;
        // The middle block always has attention at the deepest level's channels.
        for (i, h) in heads.iter_mut().enumerate() {
            let needs = self.attention_levels[i] || i + 1 == levels;
            if !needs {
                *h = 0;
                continue;
            }
            let c = self.num_channels[i];
            if *h == 0 || c % *h != 0 {
                return Err(invalid(
                    NET,
                    format!("num_head_channels {h} at level {i} does not divide its {c} channels"),
                ));
            }
        }
        let res = self.num_res_blocks.unwrap_or(PerLevel::One(2)).expand(
            levels,
            NET,
            "num_res_blocks",
        )?;
        Ok(UnetConfig {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            num_channels: self.num_channels,
            attention_levels: self.attention_levels,
            num_head_channels: heads,
            num_res_blocks: res,
            norm_num_groups: groups,
            norm_eps: eps,
            attention_output_projection: projection,
        })
    }
}

/// A `noise_scheduler` section: MONAI Generative 0.2.3's `DDPMScheduler`, `DDIMScheduler` or
/// `PNDMScheduler` constructor arguments (plus `num_inference_steps`, and `sampler` naming the
/// class where there is no `_target_`). Every argument is honoured or refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerDef {
    #[serde(rename = "_target_")]
    target: Option<String>,
    num_train_timesteps: Option<u32>,
    beta_start: Option<f32>,
    beta_end: Option<f32>,
    #[serde(alias = "beta_schedule")]
    schedule: Option<String>,
    /// `sigmoid_beta`'s range (MONAI default 6).
    sig_range: Option<f32>,
    /// `cosine`'s offset (MONAI default 8e-3).
    s: Option<f32>,
    prediction_type: Option<String>,
    clip_sample: Option<bool>,
    set_alpha_to_one: Option<bool>,
    steps_offset: Option<u32>,
    variance_type: Option<String>,
    skip_prk_steps: Option<bool>,
    /// Not a MONAI argument: the sampler ("ddim", "ddpm" or "pndm") where `_target_` is absent.
    sampler: Option<String>,
    num_inference_steps: Option<u32>,
}

/// The sampler a `_target_` names: the class name after the last dot.
fn sampler_of_target(target: &str) -> Result<SamplerKind, ArchError> {
    match target.rsplit('.').next().unwrap_or(target) {
        "DDIMScheduler" => Ok(SamplerKind::Ddim),
        "DDPMScheduler" => Ok(SamplerKind::Ddpm),
        "PNDMScheduler" => Ok(SamplerKind::Pndm),
        _ => Err(invalid(
            "noise_scheduler",
            format!("_target_ `{target}` is not supported (DDPMScheduler, DDIMScheduler, PNDMScheduler)"),
        )),
    }
}

/// Whether a MONAI schedule function takes `beta_start` and `beta_end` (all but `cosine`).
fn takes_betas_of(schedule: &str) -> bool {
    schedule != "cosine"
}

fn class_name(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Ddim => "DDIMScheduler",
        SamplerKind::Ddpm => "DDPMScheduler",
        SamplerKind::Pndm => "PNDMScheduler",
    }
}

impl SchedulerDef {
    fn validate(self) -> Result<SchedulerConfig, ArchError> {
        const S: &str = "noise_scheduler";
        let b = SchedulerConfig::bundle();
        let by_name = match self.sampler.as_deref() {
            None => None,
            Some("ddim") => Some(SamplerKind::Ddim),
            Some("ddpm") => Some(SamplerKind::Ddpm),
            Some("pndm") => Some(SamplerKind::Pndm),
            Some(other) => {
                return Err(invalid(
                    S,
                    format!("sampler `{other}` is not ddim, ddpm or pndm"),
                ))
            }
        };
        let by_target = self.target.as_deref().map(sampler_of_target).transpose()?;
        let kind = match (by_target, by_name) {
            (Some(t), Some(n)) if t != n => {
                return Err(invalid(
                    S,
                    format!(
                        "sampler `{}` contradicts _target_ {}",
                        n.name(),
                        class_name(t)
                    ),
                ))
            }
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => SamplerKind::Ddim,
        };
        let class = class_name(kind);
        // An argument the class does not take is a TypeError in MONAI: refused here too.
        let not_for = |arg: &str, given: bool, takes: &[SamplerKind]| {
            if given && !takes.contains(&kind) {
                Err(invalid(S, format!("{class} takes no argument `{arg}`")))
            } else {
                Ok(())
            }
        };
        use SamplerKind::{Ddim, Ddpm, Pndm};
        not_for("clip_sample", self.clip_sample.is_some(), &[Ddim, Ddpm])?;
        not_for(
            "set_alpha_to_one",
            self.set_alpha_to_one.is_some(),
            &[Ddim, Pndm],
        )?;
        not_for("steps_offset", self.steps_offset.is_some(), &[Ddim, Pndm])?;
        not_for("variance_type", self.variance_type.is_some(), &[Ddpm])?;
        not_for("skip_prk_steps", self.skip_prk_steps.is_some(), &[Pndm])?;

        // A section with `_target_` is a MONAI constructor call: what it leaves out takes MONAI's
        // defaults (linear_beta 1e-4..2e-2, clip_sample true). Without `_target_` it is this
        // project's shorthand, whose defaults are the bundle's.
        let monai = self.target.is_some();
        let schedule_name = self.schedule.as_deref().unwrap_or(if monai {
            "linear_beta"
        } else {
            "scaled_linear_beta"
        });
        let (default_start, default_end) = if monai || !takes_betas_of(schedule_name) {
            (1e-4, 2e-2)
        } else {
            (b.beta_start, b.beta_end)
        };
        let takes_betas = takes_betas_of(schedule_name);
        if !takes_betas && (self.beta_start.is_some() || self.beta_end.is_some()) {
            return Err(invalid(
                S,
                "the cosine schedule takes no beta_start or beta_end",
            ));
        }
        if self.sig_range.is_some() && schedule_name != "sigmoid_beta" {
            return Err(invalid(
                S,
                format!("sig_range applies to sigmoid_beta only, not `{schedule_name}`"),
            ));
        }
        if self.s.is_some() && schedule_name != "cosine" {
            return Err(invalid(
                S,
                format!("s applies to the cosine schedule only, not `{schedule_name}`"),
            ));
        }
        let beta_schedule = match schedule_name {
            "scaled_linear_beta" | "scaled_linear" => BetaSchedule::ScaledLinear,
            "linear_beta" | "linear" => BetaSchedule::Linear,
            "sigmoid_beta" => BetaSchedule::Sigmoid { sig_range: self.sig_range.unwrap_or(6.0) },
            "cosine" => BetaSchedule::Cosine { s: self.s.unwrap_or(8e-3) },
            other => {
                return Err(invalid(
                    S,
                    format!("schedule `{other}` is not supported (linear_beta, scaled_linear_beta, sigmoid_beta, cosine)"),
                ))
            }
        };
        let prediction_type = match self.prediction_type.as_deref() {
            None | Some("epsilon") => PredictionType::Epsilon,
            Some("sample") if kind == Pndm => {
                return Err(invalid(
                    S,
                    "PNDMScheduler has no prediction_type `sample` (epsilon, v_prediction)",
                ))
            }
            Some("sample") => PredictionType::Sample,
            Some("v_prediction") => PredictionType::VPrediction,
            Some(other) => {
                return Err(invalid(
                    S,
                    format!("prediction_type `{other}` is not epsilon, sample or v_prediction"),
                ))
            }
        };
        let variance_type = match self.variance_type.as_deref() {
            None | Some("fixed_small") => VarianceType::FixedSmall,
            Some("fixed_large") => VarianceType::FixedLarge,
            Some(v @ ("learned" | "learned_range")) => {
                return Err(invalid(
                    S,
                    format!("variance_type `{v}` needs a UNet that predicts its variance, which is not supported (fixed_small, fixed_large)"),
                ))
            }
            Some(other) => return Err(invalid(S, format!("variance_type `{other}` is not fixed_small or fixed_large"))),
        };
        // The named class takes the section's arguments on top of MONAI's defaults; the other
        // samplers keep their own class's defaults.
        let mut ddpm = DdpmSettings::monai_default();
        let mut ddim = if monai {
            DdimSettings::monai_default()
        } else {
            b.ddim.clone()
        };
        let mut pndm = PndmSettings::monai_default();
        match kind {
            Ddpm => {
                ddpm.clip_sample = self.clip_sample.unwrap_or(ddpm.clip_sample);
                ddpm.variance_type = variance_type;
            }
            Ddim => {
                ddim.clip_sample = self.clip_sample.unwrap_or(ddim.clip_sample);
                ddim.set_alpha_to_one = self.set_alpha_to_one.unwrap_or(ddim.set_alpha_to_one);
                ddim.steps_offset = self.steps_offset.unwrap_or(0);
            }
            Pndm => {
                pndm.skip_prk_steps = self.skip_prk_steps.unwrap_or(pndm.skip_prk_steps);
                pndm.set_alpha_to_one = self.set_alpha_to_one.unwrap_or(pndm.set_alpha_to_one);
                pndm.steps_offset = self.steps_offset.unwrap_or(0);
            }
        }
        let cfg = SchedulerConfig {
            num_train_timesteps: self.num_train_timesteps.unwrap_or(b.num_train_timesteps),
            beta_schedule,
            beta_start: self.beta_start.unwrap_or(default_start),
            beta_end: self.beta_end.unwrap_or(default_end),
            prediction_type,
            ddpm,
            ddim,
            pndm,
            default_sampler: kind,
            default_steps: self.num_inference_steps.unwrap_or(b.default_steps),
        };
        if cfg.num_train_timesteps == 0
            || cfg.default_steps == 0
            || cfg.default_steps > cfg.num_train_timesteps
        {
            return Err(invalid(
                S,
                "need 0 < num_inference_steps <= num_train_timesteps",
            ));
        }
        if !(cfg.beta_start > 0.0 && cfg.beta_start < cfg.beta_end && cfg.beta_end < 1.0) {
            return Err(invalid(
                S,
                format!(
                    "need 0 < beta_start < beta_end < 1, got {} and {}",
                    cfg.beta_start, cfg.beta_end
                ),
            ));
        }
        cfg.validate().map_err(|e| invalid(S, e.to_string()))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
