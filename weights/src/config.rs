//! Model, scheduler and output-geometry configurations stored in a blob's header.
//!
//! These mirror the constructor arguments of MONAI Generative 0.2.3 (`AutoencoderKL`,
//! `DiffusionModelUNet`, `DDIMScheduler`/`DDPMScheduler`), restricted to what this project
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

/// Beta schedule of the noise scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, T)`.
    Linear,
    /// `linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2` (the bundle's `scaled_linear_beta`).
    ScaledLinear,
}

/// Which sampler a model is meant to run with by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    Ddim,
    Ddpm,
}

/// Training noise schedule plus the default sampling settings.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// T (bundle: 1000).
    pub num_train_timesteps: u32,
    pub beta_schedule: BetaSchedule,
    /// Bundle: 0.0015.
    pub beta_start: f32,
    /// Bundle: 0.0195.
    pub beta_end: f32,
    /// DDPM: clamp the predicted x0 to [-1, 1] (MONAI default true for DDPM).
    pub clip_sample: bool,
    /// Default sampler and number of steps (bundle: DDIM, 50).
    pub default_sampler: SamplerKind,
    pub default_steps: u32,
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

impl SchedulerConfig {
    /// The bundle's scheduler: scaled-linear betas 0.0015..0.0195 over 1000 steps, DDIM 50.
    pub fn bundle() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::ScaledLinear,
            beta_start: 0.0015,
            beta_end: 0.0195,
            clip_sample: true,
            default_sampler: SamplerKind::Ddim,
            default_steps: 50,
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
