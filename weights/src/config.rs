//! Model, scheduler and output-geometry configurations stored in a blob's header.
//!
//! These mirror the constructor arguments of MONAI Generative 0.2.3 (`AutoencoderKL`,
//! `DiffusionModelUNet`, `DDIMScheduler`/`DDPMScheduler`/`PNDMScheduler`), restricted to what this project
//! supports: 3-D only, no conditioning, no attention inside the autoencoder. Every per-level list
//! is in encoder / down-path order (shallowest level first), exactly as in the bundle's JSON.

use serde::{Deserialize, Serialize};

/// The autoencoder's decoder: `post_quant_conv` + `Decoder` of `AutoencoderKL`.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// Latent channels L (bundle: 8).
    pub latent_channels: u32,
    /// Channels per level, shallowest first (bundle: [64, 128, 256]).
    pub num_channels: Vec<u32>,
    /// Residual blocks per level, shallowest first (bundle: [2, 2, 2]).
    pub num_res_blocks: Vec<u32>,
    /// Output image channels (bundle: 1).
    pub out_channels: u32,
    /// GroupNorm groups (bundle: 32).
    pub norm_num_groups: u32,
    /// GroupNorm epsilon (bundle: 1e-6).
    pub norm_eps: f32,
}

/// The autoencoder's encoder: `Encoder` + `quant_conv_mu` + `quant_conv_log_sigma`.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// Input image channels (bundle: 1).
    pub in_channels: u32,
    /// Channels per level, shallowest first.
    pub num_channels: Vec<u32>,
    /// Residual blocks per level, shallowest first.
    pub num_res_blocks: Vec<u32>,
    /// Latent channels L.
    pub latent_channels: u32,
    pub norm_num_groups: u32,
    pub norm_eps: f32,
}

/// `DiffusionModelUNet` without conditioning.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
pub struct UnetConfig {
    pub in_channels: u32,
    pub out_channels: u32,
    /// Channels per level, shallowest first (bundle: [256, 256, 512]).
    pub num_channels: Vec<u32>,
    /// Whether each level has attention blocks (bundle: [false, true, true]).
    pub attention_levels: Vec<bool>,
    /// Channels per attention head per level; 0 where the level has no attention
    /// (bundle: [0, 64, 64]).
    pub num_head_channels: Vec<u32>,
    /// Residual blocks per level on the down path (the up path has one more).
    pub num_res_blocks: Vec<u32>,
    pub norm_num_groups: u32,
    pub norm_eps: f32,
    /// Whether attention applies its output projection `proj_attn`. MONAI Generative 0.2.3
    /// creates the layer but never applies it (MONAI issue 7991), so every model converted
    /// from a bundle checkpoint has `false`; its `proj_attn` tensors are then not stored.
    pub attention_output_projection: bool,
}

/// Beta schedule of the noise scheduler (MONAI Generative 0.2.3's `NoiseSchedules`).
#[derive(Debug, Clone, Copy, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `linear_beta`: `linspace(beta_start, beta_end, T)`.
    Linear,
    /// `scaled_linear_beta`: `linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2` (the bundle's).
    ScaledLinear,
    /// `sigmoid_beta`: `sigmoid(linspace(-sig_range, sig_range, T)) * (beta_end - beta_start) +
    /// beta_start` (MONAI's default `sig_range` is 6).
    Sigmoid { sig_range: f32 },
    /// `cosine` (Nichol and Dhariwal): `alphas_cumprod` from the squared cosine with offset `s`
    /// (MONAI's default 8e-3); `beta_start` and `beta_end` are not used.
    Cosine { s: f32 },
}

/// What the UNet predicts (MONAI's `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise (`epsilon`).
    Epsilon,
    /// The clean sample x0 (`sample`).
    Sample,
    /// The velocity `sqrt(a_t) eps - sqrt(1 - a_t) x0` (`v_prediction`).
    VPrediction,
}

/// Variance of DDPM's ancestral step (MONAI's `variance_type`; the learned kinds need a UNet that
/// predicts its variance, which this format does not hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    /// The posterior variance `(1 - a_prev) / (1 - a_t) * beta_t`, clamped below at 1e-20.
    FixedSmall,
    /// `beta_t`.
    FixedLarge,
}

/// Which sampler a model is meant to run with by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    Ddim,
    Ddpm,
    /// PNDM: pseudo linear multi-step (PLMS), after a Runge-Kutta warm-up unless
    /// `PndmSettings::skip_prk_steps`.
    Pndm,
}

/// `DDPMScheduler`'s sampling options.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
pub struct DdpmSettings {
    /// Clamp the predicted x0 to [-1, 1] (MONAI default true).
    pub clip_sample: bool,
    /// MONAI default fixed_small.
    pub variance_type: VarianceType,
}

/// `DDIMScheduler`'s sampling options (eta is a run option, not stored).
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
pub struct DdimSettings {
    /// Clamp the predicted x0 to [-1, 1] (MONAI default true).
    pub clip_sample: bool,
    /// The previous alpha product after the last step is 1 (true, MONAI default) or
    /// `alphas_cumprod[0]`.
    pub set_alpha_to_one: bool,
    /// Added to every inference timestep (MONAI default 0).
    pub steps_offset: u32,
}

/// `PNDMScheduler`'s sampling options.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
pub struct PndmSettings {
    /// Start with plain PLMS instead of three Runge-Kutta steps (MONAI default false).
    pub skip_prk_steps: bool,
    /// As for DDIM, but MONAI's default for PNDM is false.
    pub set_alpha_to_one: bool,
    /// Added to every inference timestep (MONAI default 0).
    pub steps_offset: u32,
}

/// Training noise schedule, what the UNet predicts, each sampler's options and the default
/// sampling settings. A sampler uses its own settings whichever sampler is the default.
///
/// In JSON (training run configurations and checkpoints) `prediction_type`, `ddpm`, `ddim` and
/// `pndm` may be left out, and the earlier form with one `clip_sample` is still read
/// (`SchedulerJson`), with the earlier meaning: it is DDPM's, and DDIM does not clamp.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
#[serde(try_from = "SchedulerJson")]
pub struct SchedulerConfig {
    /// T (bundle: 1000).
    pub num_train_timesteps: u32,
    pub beta_schedule: BetaSchedule,
    /// Bundle: 0.0015.
    pub beta_start: f32,
    /// Bundle: 0.0195.
    pub beta_end: f32,
    /// What the UNet was trained to predict (bundle: epsilon).
    pub prediction_type: PredictionType,
    pub ddpm: DdpmSettings,
    pub ddim: DdimSettings,
    pub pndm: PndmSettings,
    /// Default sampler and number of steps (bundle: DDIM, 50).
    pub default_sampler: SamplerKind,
    pub default_steps: u32,
}

/// The JSON form `SchedulerConfig` is read from: its fields, the per-sampler sections optional,
/// and the earlier single `clip_sample`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerJson {
    num_train_timesteps: u32,
    beta_schedule: BetaSchedule,
    beta_start: f32,
    beta_end: f32,
    #[serde(default = "epsilon")]
    prediction_type: PredictionType,
    ddpm: Option<DdpmSettings>,
    ddim: Option<DdimSettings>,
    pndm: Option<PndmSettings>,
    /// The earlier form: DDPM's clamp (DDIM never clamped).
    clip_sample: Option<bool>,
    default_sampler: SamplerKind,
    default_steps: u32,
}

fn epsilon() -> PredictionType {
    PredictionType::Epsilon
}

impl TryFrom<SchedulerJson> for SchedulerConfig {
    type Error = String;
    fn try_from(j: SchedulerJson) -> Result<Self, String> {
        if j.clip_sample.is_some() && (j.ddpm.is_some() || j.ddim.is_some()) {
            return Err("scheduler: give clip_sample inside `ddpm` and `ddim`, not beside them".into());
        }
        Ok(SchedulerConfig {
            num_train_timesteps: j.num_train_timesteps,
            beta_schedule: j.beta_schedule,
            beta_start: j.beta_start,
            beta_end: j.beta_end,
            prediction_type: j.prediction_type,
            ddpm: j.ddpm.unwrap_or(DdpmSettings {
                clip_sample: j.clip_sample.unwrap_or(true),
                variance_type: VarianceType::FixedSmall,
            }),
            ddim: j.ddim.unwrap_or(DdimSettings { clip_sample: false, set_alpha_to_one: true, steps_offset: 0 }),
            pndm: j.pndm.unwrap_or_else(PndmSettings::monai_default),
            default_sampler: j.default_sampler,
            default_steps: j.default_steps,
        })
    }
}

/// How generated volumes sit in scanner space, and their intensity range.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
pub struct OutputGeometry {
    /// Voxel size in mm along the three spatial axes of the output array (bundle: 1.1 mm).
    pub spacing_mm: [f32; 3],
    /// Three-letter orientation code of the array axes, e.g. "RAS" (the bundle's).
    pub orientation: String,
    /// Intensity range the model was trained on (bundle: [0, 1]).
    pub intensity_range: [f32; 2],
}

/// Where a blob came from.
#[derive(Debug, Clone, PartialEq, Default, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
pub struct Provenance {
    /// Program and version that wrote the blob, e.g. "brats-ldm 0.1.0 convert".
    pub producer: String,
    /// What it was trained on or converted from (free text).
    pub data: String,
    /// Training steps (0 when unknown, e.g. converted).
    pub steps: u64,
    /// ISO-8601 date, or empty when not recorded (conversion leaves it empty so that the same
    /// weights always give the same bytes).
    pub date: String,
}

/// Everything about a model except its tensors.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
pub struct ModelConfig {
    pub decoder: Option<DecoderConfig>,
    pub encoder: Option<EncoderConfig>,
    pub unet: Option<UnetConfig>,
    pub scheduler: SchedulerConfig,
    /// Latents are divided by this before decoding (the bundle's own sampler: 1.0).
    pub scale_factor: f32,
    /// Default latent shape [C, D, H, W] (bundle: [8, 36, 44, 28]).
    pub latent_shape: [u32; 4],
    pub geometry: OutputGeometry,
    pub provenance: Provenance,
}

impl DecoderConfig {
    /// The bundle's decoder (channels [64,128,256], latent 8, 2 res blocks, 32 groups).
    pub fn bundle() -> Self {
        DecoderConfig {
            latent_channels: 8,
            num_channels: vec![64, 128, 256],
            num_res_blocks: vec![2, 2, 2],
            out_channels: 1,
            norm_num_groups: 32,
            norm_eps: 1e-6,
        }
    }
}

impl EncoderConfig {
    /// The bundle's encoder.
    pub fn bundle() -> Self {
        EncoderConfig {
            in_channels: 1,
            num_channels: vec![64, 128, 256],
            num_res_blocks: vec![2, 2, 2],
            latent_channels: 8,
            norm_num_groups: 32,
            norm_eps: 1e-6,
        }
    }
}

impl UnetConfig {
    /// The bundle's diffusion UNet.
    pub fn bundle() -> Self {
        UnetConfig {
            in_channels: 8,
            out_channels: 8,
            num_channels: vec![256, 256, 512],
            attention_levels: vec![false, true, true],
            num_head_channels: vec![0, 64, 64],
            num_res_blocks: vec![2, 2, 2],
            norm_num_groups: 32,
            norm_eps: 1e-6,
            attention_output_projection: false,
        }
    }
}

impl DdpmSettings {
    /// `DDPMScheduler`'s defaults: clip_sample true, fixed_small.
    pub fn monai_default() -> Self {
        DdpmSettings { clip_sample: true, variance_type: VarianceType::FixedSmall }
    }
}

impl DdimSettings {
    /// `DDIMScheduler`'s defaults: clip_sample true, set_alpha_to_one true, steps_offset 0.
    pub fn monai_default() -> Self {
        DdimSettings { clip_sample: true, set_alpha_to_one: true, steps_offset: 0 }
    }
}

impl PndmSettings {
    /// `PNDMScheduler`'s defaults: with the Runge-Kutta warm-up, set_alpha_to_one false,
    /// steps_offset 0.
    pub fn monai_default() -> Self {
        PndmSettings { skip_prk_steps: false, set_alpha_to_one: false, steps_offset: 0 }
    }
}

impl SchedulerConfig {
    /// The bundle's scheduler: scaled-linear betas 0.0015..0.0195 over 1000 steps, epsilon
    /// prediction, DDIM 50 without clipping (its inference config's `DDIMScheduler` has
    /// `clip_sample: false`); the DDPM and PNDM settings are MONAI's defaults.
    pub fn bundle() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::ScaledLinear,
            beta_start: 0.0015,
            beta_end: 0.0195,
            prediction_type: PredictionType::Epsilon,
            ddpm: DdpmSettings::monai_default(),
            ddim: DdimSettings { clip_sample: false, ..DdimSettings::monai_default() },
            pndm: PndmSettings::monai_default(),
            default_sampler: SamplerKind::Ddim,
            default_steps: 50,
        }
    }

    /// The settings of `kind`'s sampler that say whether it clamps the predicted x0 (PNDM never
    /// does).
    pub fn clip_sample(&self, kind: SamplerKind) -> bool {
        match kind {
            SamplerKind::Ddim => self.ddim.clip_sample,
            SamplerKind::Ddpm => self.ddpm.clip_sample,
            SamplerKind::Pndm => false,
        }
    }
}

impl ModelConfig {
    /// The bundle's full model: decoder, encoder and UNet at the bundle config, DDIM 50 steps,
    /// scale factor 1.0 (what the bundle's own sampler uses), latent [8, 36, 44, 28].
    pub fn bundle() -> Self {
        ModelConfig {
            decoder: Some(DecoderConfig::bundle()),
            encoder: Some(EncoderConfig::bundle()),
            unet: Some(UnetConfig::bundle()),
            scheduler: SchedulerConfig::bundle(),
            scale_factor: 1.0,
            latent_shape: [8, 36, 44, 28],
            geometry: OutputGeometry::bundle(),
            provenance: Provenance::default(),
        }
    }
}

impl OutputGeometry {
    /// The bundle's output: 1.1 mm isotropic, RAS, intensities in [0, 1].
    pub fn bundle() -> Self {
        OutputGeometry {
            spacing_mm: [1.1, 1.1, 1.1],
            orientation: "RAS".to_string(),
            intensity_range: [0.0, 1.0],
        }
    }
}

impl BetaSchedule {
    /// MONAI's name of the schedule (`schedule` argument).
    pub fn monai_name(self) -> &'static str {
        match self {
            BetaSchedule::Linear => "linear_beta",
            BetaSchedule::ScaledLinear => "scaled_linear_beta",
            BetaSchedule::Sigmoid { .. } => "sigmoid_beta",
            BetaSchedule::Cosine { .. } => "cosine",
        }
    }
}

impl PredictionType {
    /// MONAI's name (`prediction_type` argument).
    pub fn monai_name(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::Sample => "sample",
            PredictionType::VPrediction => "v_prediction",
        }
    }
}

impl VarianceType {
    /// MONAI's name (`variance_type` argument).
    pub fn monai_name(self) -> &'static str {
        match self {
            VarianceType::FixedSmall => "fixed_small",
            VarianceType::FixedLarge => "fixed_large",
        }
    }
}

impl SamplerKind {
    /// The sampler's name on the command line: "ddim", "ddpm" or "pndm".
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Pndm => "pndm",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run configurations written before every scheduler option was recorded still read, with
    /// their meaning (clip_sample: DDPM's; DDIM never clamped); the full form round-trips.
    #[test]
    fn scheduler_json_reads_the_earlier_form_and_round_trips() {
        let old = r#"{"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.0015,
            "beta_end": 0.0195, "clip_sample": false, "default_sampler": "ddpm", "default_steps": 1000}"#;
        let s: SchedulerConfig = serde_json::from_str(old).unwrap();
        assert!(!s.ddpm.clip_sample && !s.ddim.clip_sample);
        assert_eq!((s.prediction_type, s.default_sampler), (PredictionType::Epsilon, SamplerKind::Ddpm));
        let mut full = SchedulerConfig::bundle();
        full.beta_schedule = BetaSchedule::Sigmoid { sig_range: 5.0 };
        full.prediction_type = PredictionType::VPrediction;
        full.pndm.skip_prk_steps = true;
        let text = serde_json::to_string(&full).unwrap();
        assert_eq!(serde_json::from_str::<SchedulerConfig>(&text).unwrap(), full);
        let both = text.replacen('{', r#"{"clip_sample": true, "#, 1);
        assert!(serde_json::from_str::<SchedulerConfig>(&both).unwrap_err().to_string().contains("clip_sample"));
    }
}
