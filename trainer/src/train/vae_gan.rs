//! The autoencoder stage as the bundle's `VaeGanTrainer` iteration runs it (model-zoo
//! `brats_mri_generative_diffusion/scripts/ldm_trainer.py` and `losses.py`):
//! 1. one autoencoder forward: `recon, mu, sigma` (z = mu + sigma * n, n from the (seed, step)
//!    Philox stream);
//! 2. `d_train_steps` discriminator updates (bundle: 5) on that same, detached reconstruction:
//!    `adv_weight * 0.5 * (LSGAN(D(recon), fake) + LSGAN(D(x), real))`, each with fresh logits
//!    of the just-updated discriminator;
//! 3. one generator update: `L1(recon, x) + kl_weight * KL + perceptual_weight * P
//!    + adv_weight * LSGAN_gen(D(recon))` with the updated discriminator (frozen here).
//!
//! The adversarial terms start at `adv_start_step` (bundle: 0). The perceptual term P is used
//! only when a [`PerceptualLoss`] is supplied (pretrained weights are not shipped). One Adam per
//! network, learning rates from MultiStepLR schedules.

use std::path::Path;

use ldm_weights::{DecoderConfig, EncoderConfig};
use serde::{Deserialize, Serialize};

use super::batch_part::{BatchPart, Network};
use super::{all_finite, finite, tensor_table, TrainError};
use crate::checkpoint::{self, CheckpointHeader, SectionInfo};
use crate::init::{init_params, normals_at, Stream};
use crate::layers::Dims;
use crate::losses::{self, PerceptualLoss};
use crate::models::autoencoder::AutoencoderKL;
use crate::models::discriminator::{DiscriminatorConfig, PatchDiscriminator};
use crate::optim::{Adam, AdamConfig, MultiStepLr};
use crate::params::ParamStore;

const KIND: &str = "vae_gan";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeGanConfig {
    pub encoder: EncoderConfig,
    pub decoder: DecoderConfig,
    pub discriminator: DiscriminatorConfig,
    /// Bundle: 1e-7.
    pub kl_weight: f32,
    /// Bundle: 0.1.
    pub adv_weight: f32,
    /// Weight of the optional perceptual loss (used only when one is supplied).
    pub perceptual_weight: f32,
    /// First step (0-based) that uses the adversarial terms (bundle: 0, no warm-up).
    pub adv_start_step: u64,
    /// Discriminator updates per step (bundle: 5).
    pub d_train_steps: u32,
    pub adam_g: AdamConfig,
    pub adam_d: AdamConfig,
    pub lr_g: MultiStepLr,
    pub lr_d: MultiStepLr,
}

impl VaeGanConfig {
    /// The bundle's hyper-parameters (model-zoo `train_autoencoder.json` + `scripts/losses.py`):
    /// networks as `EncoderConfig/DecoderConfig::bundle()` and a 3-layer, 32-channel
    /// discriminator; kl 1e-7, adversarial 0.1, perceptual 0.1 (inactive unless a perceptual
    /// loss is supplied), 5 discriminator updates per step, Adam lr 1e-5 for both networks.
    pub fn bundle() -> Self {
        let adam = AdamConfig { lr: 1e-5, ..AdamConfig::default() };
        VaeGanConfig {
            encoder: EncoderConfig::bundle(),
            decoder: DecoderConfig::bundle(),
            discriminator: DiscriminatorConfig::bundle(),
            kl_weight: 1e-7,
            adv_weight: 0.1,
            perceptual_weight: 0.1,
            adv_start_step: 0,
            d_train_steps: 5,
            adam_g: adam,
            adam_d: adam,
            lr_g: MultiStepLr::constant(1e-5),
            lr_d: MultiStepLr::constant(1e-5),
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeStepLog {
    pub step: u64,
    pub l1: f32,
    pub kl: f32,
    pub perceptual: Option<f32>,
    pub gen_adv: Option<f32>,
    /// Mean discriminator loss (including `adv_weight`) over the step's discriminator updates.
    pub disc: Option<f32>,
    pub loss_g: f32,
    pub lr_g: f32,
}

pub struct VaeGanTrainer {
    pub config: VaeGanConfig,
    pub seed: u64,
    /// Completed steps.
    pub step: u64,
    pub ae: AutoencoderKL,
    pub ae_params: ParamStore,
    pub disc: PatchDiscriminator,
    pub disc_params: ParamStore,
    pub opt_g: Adam,
    pub opt_d: Adam,
    /// Off by default: needs pretrained feature weights that are not shipped.
    pub perceptual: Option<Box<dyn PerceptualLoss>>,
}

impl VaeGanTrainer {
    /// Builds the networks and initialises them deterministically from `seed`.
    pub fn new(config: VaeGanConfig, seed: u64) -> Result<Self, TrainError> {
        Self::build(config, seed, true)
    }

    /// Builds the networks; `init == false` leaves parameters at zero (resume overwrites them).
    fn build(config: VaeGanConfig, seed: u64, init: bool) -> Result<Self, TrainError> {
        let mut ae_params = ParamStore::new();
        let ae = AutoencoderKL::new(&mut ae_params, &config.encoder, &config.decoder)?;
        let mut disc_params = ParamStore::new();
        let disc = PatchDiscriminator::new(&mut disc_params, &config.discriminator)?;
        if init {
            init_params(&mut ae_params, seed);
            init_params(&mut disc_params, seed ^ 0xD15C);
        }
        let opt_g = Adam::new(config.adam_g, ae_params.len());
        let opt_d = Adam::new(config.adam_d, disc_params.len());
        Ok(VaeGanTrainer { config, seed, step: 0, ae, ae_params, disc, disc_params, opt_g, opt_d, perceptual: None })
    }

    /// One optimisation step on a batch of images `[N, C, D, H, W]`.
    pub fn train_step(&mut self, images: &[f32], dims: Dims) -> Result<VaeStepLog, TrainError> {
        self.train_step_part(images, dims, &mut BatchPart::whole())
    }

    /// One step on this rank's part of a global batch: the latent noise is the part's slice of
    /// the global draw, and both networks' gradients are averaged over the ranks by `part`
    /// before their optimiser steps.
    pub fn train_step_part(&mut self, images: &[f32], dims: Dims, part: &mut BatchPart) -> Result<VaeStepLog, TrainError> {
        let step = self.step;
        let cfg = &self.config;
        self.ae.check_image(dims)?;
        all_finite(step, "input image", images)?;
        let p = &self.ae_params.data;
        let latent_len = {
            let f = 1usize << (cfg.encoder.num_channels.len() - 1);
            dims.n * cfg.encoder.latent_channels as usize * (dims.d / f) * (dims.h / f) * (dims.w / f)
        };
        let first = part.first_sample(dims.n) * (latent_len / dims.n.max(1)) as u64;
        let noise = normals_at(self.seed, step, Stream::VaeSampling, first, latent_len);
        let fw = self.ae.forward_train(p, images, dims, &noise)?;
        let (l1, mut drecon) = losses::l1(&fw.recon, images)?;
        let (kl, dmu, dsigma) = losses::kl(&fw.mu, &fw.sigma, dims.n)?;
        let dmu: Vec<f32> = dmu.iter().map(|v| v * cfg.kl_weight).collect();
        let dsigma: Vec<f32> = dsigma.iter().map(|v| v * cfg.kl_weight).collect();
        let mut loss_g = l1 + cfg.kl_weight * kl;
        let mut perceptual = None;
        if let Some(pl) = &self.perceptual {
            let (v, g) = pl.loss_and_grad(&fw.recon, images, fw.image_dims)?;
            loss_g += cfg.perceptual_weight * v;
            drecon.iter_mut().zip(&g).for_each(|(a, b)| *a += cfg.perceptual_weight * b);
            perceptual = Some(v);
        }
        let adversarial = step >= cfg.adv_start_step && cfg.adv_weight != 0.0;
        let (mut gen_adv, mut disc_loss) = (None, None);
        if adversarial && cfg.d_train_steps > 0 {
            let w = cfg.adv_weight;
            let lr_d = cfg.lr_d.lr_at(step);
            let mut total = 0.0f64;
            for _ in 0..cfg.d_train_steps {
                let dp = &self.disc_params.data;
                let ff = self.disc.forward(dp, &fw.recon, fw.image_dims, true)?;
                let fr = self.disc.forward(dp, images, dims, true)?;
                let (dl, dfake, dreal) = losses::lsgan_discriminator(&ff.logits, &fr.logits)?;
                finite(step, "discriminator loss", dl)?;
                total += (w * dl) as f64;
                let dfake: Vec<f32> = dfake.iter().map(|v| v * w).collect();
                let dreal: Vec<f32> = dreal.iter().map(|v| v * w).collect();
                self.disc_params.grad.iter_mut().for_each(|g| *g = 0.0);
                self.disc.backward(dp, &mut self.disc_params.grad, &ff, &dfake)?;
                self.disc.backward(dp, &mut self.disc_params.grad, &fr, &dreal)?;
                part.reduce(Network::Discriminator, &mut self.disc_params.grad)?;
                all_finite(step, "discriminator gradient", &self.disc_params.grad)?;
                if !self.opt_d.step(&mut self.disc_params.data, &self.disc_params.grad, lr_d) {
                    return Err(TrainError::Invalid("discriminator optimiser does not fit its parameters".into()));
                }
            }
            disc_loss = Some((total / cfg.d_train_steps as f64) as f32);
        }
        if adversarial {
            // The generator sees D(recon) through the (just updated, here frozen) discriminator:
            // its parameter gradients go to a scratch buffer and are discarded.
            let dp = &self.disc_params.data;
            let ff = self.disc.forward(dp, &fw.recon, fw.image_dims, true)?;
            let (ga, dlg) = losses::lsgan_generator(&ff.logits)?;
            let dlg: Vec<f32> = dlg.iter().map(|v| v * cfg.adv_weight).collect();
            let mut scratch = vec![0.0f32; dp.len()];
            let dr = self.disc.backward(dp, &mut scratch, &ff, &dlg)?;
            drecon.iter_mut().zip(&dr).for_each(|(a, b)| *a += b);
            loss_g += cfg.adv_weight * ga;
            gen_adv = Some(ga);
        }
        finite(step, "generator loss", loss_g)?;
        self.ae_params.grad.iter_mut().for_each(|g| *g = 0.0);
        self.ae.backward(p, &mut self.ae_params.grad, &fw, &drecon, &dmu, &dsigma)?;
        part.reduce(Network::Autoencoder, &mut self.ae_params.grad)?;
        all_finite(step, "autoencoder gradient", &self.ae_params.grad)?;
        let lr_g = cfg.lr_g.lr_at(step);
        if !self.opt_g.step(&mut self.ae_params.data, &self.ae_params.grad, lr_g) {
            return Err(TrainError::Invalid("generator optimiser does not fit its parameters".into()));
        }
        self.step += 1;
        Ok(VaeStepLog { step, l1, kl, perceptual, gen_adv, disc: disc_loss, loss_g, lr_g })
    }

    /// Saves everything needed to continue bit-exactly (atomic write). `extra` is the training
    /// loop's own state (data cursor, ...), returned by [`VaeGanTrainer::resume`].
    pub fn save(&self, path: &Path, extra: serde_json::Value) -> Result<(), TrainError> {
        let sections = [
            ("autoencoder.params", &self.ae_params.data),
            ("autoencoder.adam_m", &self.opt_g.m),
            ("autoencoder.adam_v", &self.opt_g.v),
            ("discriminator.params", &self.disc_params.data),
            ("discriminator.adam_m", &self.opt_d.m),
            ("discriminator.adam_v", &self.opt_d.v),
        ];
        let header = CheckpointHeader {
            kind: KIND.into(),
            step: self.step,
            seed: self.seed,
            config: serde_json::to_value(&self.config).map_err(|e| TrainError::Invalid(e.to_string()))?,
            tensors: serde_json::json!({
                "autoencoder": tensor_table(&self.ae_params),
                "discriminator": tensor_table(&self.disc_params),
            }),
            adam_steps: vec![self.opt_g.t, self.opt_d.t],
            extra,
            sections: sections.iter().map(|(n, s)| SectionInfo { name: n.to_string(), len: s.len() as u64 }).collect(),
        };
        let bufs: Vec<&[f32]> = sections.iter().map(|(_, s)| s.as_slice()).collect();
        Ok(checkpoint::save(path, &header, &bufs)?)
    }

    /// Rebuilds a trainer from a checkpoint written by [`VaeGanTrainer::save`].
    pub fn resume(path: &Path) -> Result<(Self, serde_json::Value), TrainError> {
        let (h, mut secs) = checkpoint::load(path)?;
        if h.kind != KIND || secs.len() != 6 || h.adam_steps.len() != 2 {
            return Err(TrainError::Invalid(format!("{}: not a VAE-GAN checkpoint (kind {})", path.display(), h.kind)));
        }
        let config: VaeGanConfig =
            serde_json::from_value(h.config.clone()).map_err(|e| TrainError::Invalid(format!("{}: config: {e}", path.display())))?;
        let mut t = VaeGanTrainer::build(config, h.seed, false)?;
        if h.tensors != serde_json::json!({"autoencoder": tensor_table(&t.ae_params), "discriminator": tensor_table(&t.disc_params)}) {
            return Err(TrainError::Invalid(format!("{}: tensor table does not match the configuration", path.display())));
        }
        let lens = [t.ae_params.len(), t.ae_params.len(), t.ae_params.len(), t.disc_params.len(), t.disc_params.len(), t.disc_params.len()];
        if secs.iter().zip(lens).any(|(s, l)| s.len() != l) {
            return Err(TrainError::Invalid(format!("{}: section sizes do not match the configuration", path.display())));
        }
        t.opt_d.v = secs.pop().unwrap_or_default();
        t.opt_d.m = secs.pop().unwrap_or_default();
        t.disc_params.data = secs.pop().unwrap_or_default();
        t.opt_g.v = secs.pop().unwrap_or_default();
        t.opt_g.m = secs.pop().unwrap_or_default();
        t.ae_params.data = secs.pop().unwrap_or_default();
        t.opt_g.t = h.adam_steps[0];
        t.opt_d.t = h.adam_steps[1];
        t.step = h.step;
        Ok((t, h.extra))
    }
}
