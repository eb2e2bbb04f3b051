//! Training configuration files (`configs/*.json`): the data preprocessing, the autoencoder
//! (VAE-GAN) stage and the diffusion stage with their batch sizes, step counts, checkpoint
//! cadence and seeds; the built-in presets `bundle` and `cpu-small`; and the checks that make a
//! bad configuration a clear error before any work starts.

use ldm_metrics::ssim::SsimParams;
use ldm_weights::{DdpmSettings, SamplerKind, SchedulerConfig, UnetConfig};
use serde::{Deserialize, Serialize};

use super::vae_gan::VaeGanConfig;
use super::TrainError;
use crate::data::{PercentileScaling, PreprocessConfig};
use crate::models::discriminator::DiscriminatorConfig;
use crate::optim::{AdamConfig, MultiStepLr};

/// How training volumes are prepared (the bundle's chain with these settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Channel of 4-D inputs (Task01: 0 = FLAIR).
    pub channel: usize,
    /// Target voxel size in mm (bundle: 1.1).
    pub spacing_mm: [f64; 3],
    /// Centre crop after resampling, voxels (bundle: 144 x 176 x 112).
    pub roi: [usize; 3],
    /// Intensity percentiles mapped to [0, 1] (bundle: 0 and 99.5).
    pub percentiles: [f64; 2],
}

impl DataSection {
    /// The preprocessing chain these settings describe (zero-padded to `roi`, no clipping).
    pub fn preprocess(&self) -> PreprocessConfig {
        PreprocessConfig {
            channel: self.channel,
            spacing: self.spacing_mm,
            roi: self.roi,
            pad_to_roi: true,
            scaling: PercentileScaling { lower: self.percentiles[0], upper: self.percentiles[1], ..PercentileScaling::default() },
        }
    }
}

/// The autoencoder stage: networks and losses, plus the loop's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderStage {
    pub trainer: VaeGanConfig,
    /// Random training patch (bundle: 112 x 128 x 80); at most `data.roi` per axis.
    pub patch: [usize; 3],
    pub batch_size: usize,
    /// Total optimisation steps.
    pub steps: u64,
    /// Write a checkpoint every this many steps (and always at the end).
    pub checkpoint_every: u64,
    pub seed: u64,
}

/// The diffusion stage (the scale factor is computed from the data, not configured).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionStage {
    pub unet: UnetConfig,
    pub scheduler: SchedulerConfig,
    pub adam: AdamConfig,
    pub lr: MultiStepLr,
    /// Train on sampled latents `mu + sigma * n` (the bundle's `encode_stage_2_inputs`; true) or
    /// on the posterior means `mu` (false: better for a small, briefly trained VAE whose sigma
    /// is still near its initial 1 and would bury the latents' structure in noise).
    #[serde(default = "default_true")]
    pub sample_latents: bool,
    /// Keep an exponential moving average of the UNet's weights with this decay and export it
    /// (absent or null: no EMA, as the bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f32>,
    pub batch_size: usize,
    pub steps: u64,
    pub checkpoint_every: u64,
    pub seed: u64,
}

fn default_true() -> bool {
    true
}

/// Validation logged at every checkpoint (absent from a file: none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSection {
    /// Autoencoder stage: the last `holdout` volumes (in name order) are left out of training
    /// and their reconstruction SSIM, PSNR and L1 are logged at each checkpoint. 0: none.
    pub holdout: usize,
    /// Diffusion stage: samples (seeds 0..N) drawn at each checkpoint with the current weights
    /// to log their pairwise MS-SSIM (SSIM where the volume is too small for MS-SSIM's
    /// scales), the sample diversity. Below 2: none.
    pub diversity_samples: usize,
    /// DDIM steps of those samples.
    pub diversity_steps: usize,
}

/// At most this many diversity samples per checkpoint (32,640 pairs).
pub const MAX_DIVERSITY_SAMPLES: usize = 256;
/// At most this much memory for the diversity samples held at once.
pub const MAX_DIVERSITY_BYTES: u64 = 4 << 30;

impl Default for ValidationSection {
    fn default() -> Self {
        ValidationSection { holdout: 0, diversity_samples: 0, diversity_steps: 50 }
    }
}

impl ValidationSection {
    fn is_default(&self) -> bool {
        *self == ValidationSection::default()
    }
}

/// A whole training configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub data: DataSection,
    pub autoencoder: AutoencoderStage,
    pub diffusion: DiffusionStage,
    #[serde(default, skip_serializing_if = "ValidationSection::is_default")]
    pub validation: ValidationSection,
}

/// Names accepted by [`TrainConfig::preset`].
pub const PRESETS: [&str; 2] = ["bundle", "cpu-small"];

impl TrainConfig {
    /// The bundle's hyper-parameters: 1.1 mm, 144x176x112 crop, 112x128x80 patches, batch 2,
    /// [`VaeGanConfig::bundle`] and [`super::diffusion::DiffusionConfig::bundle`] settings. The
    /// bundle counts epochs; `steps` here is a round number of optimiser steps to set for the
    /// dataset at hand (epochs x images / batch).
    pub fn bundle() -> Self {
        let d = super::diffusion::DiffusionConfig::bundle(1.0);
        TrainConfig {
            data: DataSection { channel: 0, spacing_mm: [1.1; 3], roi: [144, 176, 112], percentiles: [0.0, 99.5] },
            autoencoder: AutoencoderStage {
                trainer: VaeGanConfig::bundle(),
                patch: crate::data::VAE_PATCH,
                batch_size: 2,
                steps: 100_000,
                checkpoint_every: 1000,
                seed: 0,
            },
            diffusion: DiffusionStage {
                unet: d.unet,
                scheduler: d.scheduler,
                adam: d.adam,
                lr: d.lr,
                sample_latents: true,
                ema_decay: None,
                batch_size: 2,
                steps: 100_000,
                checkpoint_every: 1000,
                seed: 0,
            },
            validation: ValidationSection::default(),
        }
    }

    /// A small model that trains on a 2-core CPU in about half an hour: 4.4 mm voxels, a
    /// 36x44x28 crop (the bundle's field of view at a quarter of its resolution), a two-level
    /// 16/32-channel VAE with 4 latent channels (latent 4x18x22x14) and a two-level 32/64-channel
    /// UNet with attention at the deeper level. This is the shipped default model's recipe.
    pub fn cpu_small() -> Self {
        let ch = vec![16, 32, 32];
        let adam_g = AdamConfig { lr: 1e-3, ..AdamConfig::default() };
        let adam_d = AdamConfig { lr: 5e-4, ..AdamConfig::default() };
        TrainConfig {
            // 4 mm voxels, 40 x 48 x 32: the bundle's field of view (144 x 176 x 112 at 1.1 mm)
            // at a quarter of its resolution, rounded so the latent halves once more for the UNet.
            data: DataSection { channel: 0, spacing_mm: [4.0; 3], roi: [40, 48, 32], percentiles: [0.0, 99.5] },
            autoencoder: AutoencoderStage {
                trainer: VaeGanConfig {
                    encoder: ldm_weights::EncoderConfig {
                        in_channels: 1,
                        num_channels: ch.clone(),
                        num_res_blocks: vec![1, 1, 1],
                        latent_channels: 4,
                        norm_num_groups: 8,
                        norm_eps: 1e-6,
                    },
                    decoder: ldm_weights::DecoderConfig {
                        latent_channels: 4,
                        num_channels: ch,
                        num_res_blocks: vec![1, 1, 1],
                        out_channels: 1,
                        norm_num_groups: 8,
                        norm_eps: 1e-6,
                    },
                    discriminator: DiscriminatorConfig { in_channels: 1, num_channels: 8, num_layers_d: 2, out_channels: 1 },
                    kl_weight: 1e-6,
                    adv_weight: 0.01,
                    perceptual_weight: 0.0,
                    adv_start_step: 600,
                    d_train_steps: 1,
                    adam_g,
                    adam_d,
                    lr_g: MultiStepLr { base: 1e-3, milestones: vec![900, 1200], gamma: 0.5 },
                    lr_d: MultiStepLr::constant(5e-4),
                },
                patch: [32, 32, 24],
                batch_size: 2,
                steps: 1500,
                checkpoint_every: 100,
                seed: 1,
            },
            diffusion: DiffusionStage {
                unet: UnetConfig {
                    in_channels: 4,
                    out_channels: 4,
                    num_channels: vec![32, 64],
                    attention_levels: vec![false, true],
                    num_head_channels: vec![0, 32],
                    num_res_blocks: vec![1, 1],
                    norm_num_groups: 8,
                    norm_eps: 1e-6,
                    attention_output_projection: false,
                },
                // Ancestral DDPM over all 1000 timesteps without MONAI's x0 clamp to [-1, 1]: the
                // scaled latents reach magnitudes of 5 to 10, and with the clamp every sample was
                // the same lesion-free average head; DDIM gave blotchier samples.
                scheduler: SchedulerConfig {
                    ddpm: DdpmSettings { clip_sample: false, ..DdpmSettings::monai_default() },
                    default_sampler: SamplerKind::Ddpm,
                    default_steps: 1000,
                    ..SchedulerConfig::bundle()
                },
                adam: AdamConfig { lr: 4e-4, ..AdamConfig::default() },
                lr: MultiStepLr { base: 4e-4, milestones: vec![2500, 3500], gamma: 0.5 },
                sample_latents: false,
                ema_decay: Some(0.999),
                batch_size: 4,
                steps: 8000,
                checkpoint_every: 250,
                seed: 2,
            },
            validation: ValidationSection::default(),
        }
    }

    /// A built-in preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        match name {
            "bundle" => Ok(Self::bundle()),
            "cpu-small" => Ok(Self::cpu_small()),
            other => Err(TrainError::Invalid(format!("unknown preset `{other}` (known: {})", PRESETS.join(", ")))),
        }
    }

    /// Parses a configuration file's text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, TrainError> {
        let cfg: TrainConfig =
            serde_json::from_str(text).map_err(|e| TrainError::Invalid(format!("{origin}: not a training configuration: {e}")))?;
        cfg.validate().map_err(|e| TrainError::Invalid(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    /// Checks everything that can be checked without data.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        self.data.preprocess().validate().map_err(|e| TrainError::Invalid(format!("data: {e}")))?;
        let ae = &self.autoencoder;
        let enc = &ae.trainer.encoder;
        let dec = &ae.trainer.decoder;
        if enc.num_channels.is_empty() || enc.num_channels != dec.num_channels || enc.latent_channels != dec.latent_channels {
            return bad("autoencoder: encoder and decoder must have the same non-empty channel list and latent channels".into());
        }
        if enc.in_channels != 1 || dec.out_channels != 1 {
            return bad("autoencoder: training volumes have one channel (in_channels and out_channels must be 1)".into());
        }
        let f = 1usize << (enc.num_channels.len() - 1);
        for (what, shape) in [("autoencoder.patch", ae.patch), ("data.roi", self.data.roi)] {
            if shape.iter().any(|&s| s == 0 || s % f != 0) {
                return bad(format!(
                    "{what} {shape:?} must be positive and divisible by {f} (the autoencoder downsamples {} times)",
                    enc.num_channels.len() - 1
                ));
            }
        }
        if ae.patch.iter().zip(self.data.roi).any(|(&p, r)| p > r) {
            return bad(format!("autoencoder.patch {:?} is larger than data.roi {:?}", ae.patch, self.data.roi));
        }
        let df = &self.diffusion;
        self.validate_validation()?;
        for (what, b, s, k) in
            [("autoencoder", ae.batch_size, ae.steps, ae.checkpoint_every), ("diffusion", df.batch_size, df.steps, df.checkpoint_every)]
        {
            if b == 0 || s == 0 || k == 0 {
                return bad(format!("{what}: batch_size, steps and checkpoint_every must be at least 1"));
            }
        }
        if df.unet.in_channels != enc.latent_channels || df.unet.out_channels != enc.latent_channels {
            return bad(format!(
                "diffusion.unet has {} in / {} out channels; the autoencoder's latents have {}",
                df.unet.in_channels, df.unet.out_channels, enc.latent_channels
            ));
        }
        let lat = self.latent_spatial();
        let uf = 1usize << df.unet.num_channels.len().saturating_sub(1);
        if lat.iter().any(|&s| s % uf != 0) {
            return bad(format!(
                "latent size {lat:?} (data.roi / {f}) must be divisible by {uf} for the UNet's {} levels",
                df.unet.num_channels.len()
            ));
        }
        if df.scheduler.num_train_timesteps == 0 {
            return bad("diffusion.scheduler.num_train_timesteps must be at least 1".into());
        }
        Ok(())
    }

    /// The `validation` section must be computable at every checkpoint: found here, not hours
    /// into a run. SSIM's window must fit in the roi-sized volumes it compares, the diversity
    /// samples are bounded (all are held at once and every pair is compared), and DDIM cannot
    /// take more steps than the scheduler has timesteps.
    fn validate_validation(&self) -> Result<(), TrainError> {
        let v = &self.validation;
        let bad = |m: String| Err(TrainError::Invalid(m));
        let diversity = v.diversity_samples >= 2;
        if v.holdout > 0 || diversity {
            let window = SsimParams::default().kernel_size;
            if self.data.roi.iter().zip(window).any(|(&r, k)| r < k) {
                return bad(format!(
                    "validation: data.roi {:?} is smaller than the SSIM window {window:?} the validation metrics use",
                    self.data.roi
                ));
            }
        }
        if !diversity {
            return Ok(());
        }
        if v.diversity_samples > MAX_DIVERSITY_SAMPLES {
            return bad(format!(
                "validation.diversity_samples {} is above {MAX_DIVERSITY_SAMPLES} (every pair is compared at each checkpoint)",
                v.diversity_samples
            ));
        }
        let bytes = v.diversity_samples as u128 * self.data.roi.iter().map(|&r| r as u128).product::<u128>() * 4;
        if bytes > MAX_DIVERSITY_BYTES as u128 {
            return bad(format!(
                "validation: {} diversity samples of data.roi {:?} would hold {:.1} GiB at each checkpoint (at most {} GiB)",
                v.diversity_samples,
                self.data.roi,
                bytes as f64 / (1u64 << 30) as f64,
                MAX_DIVERSITY_BYTES >> 30
            ));
        }
        let timesteps = self.diffusion.scheduler.num_train_timesteps as usize;
        if v.diversity_steps == 0 || v.diversity_steps > timesteps {
            return bad(format!(
                "validation.diversity_steps {} must be between 1 and the scheduler's {timesteps} timesteps",
                v.diversity_steps
            ));
        }
        Ok(())
    }

    /// Spatial size of a latent of a full (roi-sized) volume.
    pub fn latent_spatial(&self) -> [usize; 3] {
        let f = 1usize << self.autoencoder.trainer.encoder.num_channels.len().saturating_sub(1);
        self.data.roi.map(|s| s / f)
    }
}
