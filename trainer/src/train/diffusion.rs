//! The latent diffusion stage: for latents x0 (already multiplied by the scale factor), draw
//! eps ~ N(0, 1) and t ~ U{0..T-1} from the (seed, step) streams, form
//! `x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps` on the scheduler's beta schedule, and minimise
//! `MSE(unet(x_t, t), target)` (target: eps, x0 or the velocity, by the scheduler's
//! `prediction_type`, so an exported model samples the way it was trained) with Adam and
//! a MultiStepLR schedule, optionally keeping an exponential moving average (EMA) of the weights
//! that export writes instead of the last iterate. Also: latents from images through the encoder
//! (`z = mu + sigma * n`, as `encode_stage_2_inputs`) and the scale factor `1 / std(z)`.

use std::path::Path;

use ldm_weights::{SchedulerConfig, UnetConfig};
use serde::{Deserialize, Serialize};

use super::batch_part::{BatchPart, Network};
use super::{all_finite, finite, tensor_table, TrainError};
use crate::checkpoint::{self, CheckpointHeader, SectionInfo};
use crate::init::{init_params, normals, normals_at, uniform_ints_at, Stream};
use crate::layers::Dims;
use crate::losses;
use crate::models::autoencoder::AutoencoderKL;
use crate::models::unet::DiffusionUnet;
use crate::optim::{Adam, AdamConfig, MultiStepLr};
use crate::params::ParamStore;
use crate::schedule::{add_noise, alphas_cumprod, training_target};

const KIND: &str = "diffusion";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusionConfig {
    pub unet: UnetConfig,
    pub scheduler: SchedulerConfig,
    pub adam: AdamConfig,
    pub lr: MultiStepLr,
    /// The latents' scale factor (1/std(z)), recorded for export.
    pub scale_factor: f32,
    /// Decay of the weights' exponential moving average (None: no EMA, as the bundle). The
    /// average is what export writes; early steps use `min(decay, (1 + k) / (10 + k))` after
    /// k updates, so a short run is not dominated by its random initialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f32>,
}

impl DiffusionConfig {
    /// The bundle's diffusion training (model-zoo `train_diffusion.json`): `UnetConfig::bundle()`,
    /// the scaled-linear DDPM schedule, Adam lr 1e-5 (the 3-D bundle's value is 1e-5 to 2e-5
    /// depending on its version; the MultiStepLR milestone at 5000 with gamma 0.1 is counted
    /// here in optimiser steps). `scale_factor` is computed from data (1/std(z)).
    pub fn bundle(scale_factor: f32) -> Self {
        DiffusionConfig {
            unet: UnetConfig::bundle(),
            scheduler: SchedulerConfig::bundle(),
            adam: AdamConfig { lr: 1e-5, ..AdamConfig::default() },
            lr: MultiStepLr { base: 1e-5, milestones: vec![5000], gamma: 0.1 },
            scale_factor,
            ema_decay: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusionStepLog {
    pub step: u64,
    pub loss: f32,
    pub lr: f32,
    pub timesteps: Vec<u64>,
}

pub struct DiffusionTrainer {
    pub config: DiffusionConfig,
    pub seed: u64,
    pub step: u64,
    pub unet: DiffusionUnet,
    pub params: ParamStore,
    pub opt: Adam,
    /// The weights' moving average (same layout as `params.data`), when `config.ema_decay` is set.
    pub ema: Option<Vec<f32>>,
    alphas_cumprod: Vec<f32>,
}

/// Samples `z = mu + sigma * n` for a batch of images (noise from the (seed, index) stream).
pub fn encode_latents(
    ae: &AutoencoderKL,
    p: &[f32],
    images: &[f32],
    dims: Dims,
    seed: u64,
    index: u64,
) -> Result<(Vec<f32>, Dims), TrainError> {
    let (mu, sigma, ld) = ae.encode(p, images, dims)?;
    let n = normals(seed, index, Stream::Encode, mu.len());
    Ok((mu.iter().zip(&sigma).zip(&n).map(|((m, s), e)| m + s * e).collect(), ld))
}

/// `1 / std(z)` with PyTorch's unbiased standard deviation.
pub fn scale_factor(z: &[f32]) -> Result<f32, TrainError> {
    if z.len() < 2 {
        return Err(TrainError::Invalid("scale factor needs at least two latent values".into()));
    }
    let n = z.len() as f64;
    let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    if var.is_nan() || var <= 0.0 || var.is_infinite() {
        return Err(TrainError::Invalid(format!("latents have variance {var}; no scale factor")));
    }
    Ok((1.0 / var.sqrt()) as f32)
}

impl DiffusionTrainer {
    pub fn new(config: DiffusionConfig, seed: u64) -> Result<Self, TrainError> {
        Self::build(config, seed, true)
    }

    /// Builds the UNet; `init == false` leaves parameters at zero (resume overwrites them).
    fn build(config: DiffusionConfig, seed: u64, init: bool) -> Result<Self, TrainError> {
        if config.scheduler.num_train_timesteps == 0 {
            return Err(TrainError::Invalid("scheduler has 0 training timesteps".into()));
        }
        if let Some(d) = config.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return Err(TrainError::Invalid(format!("ema_decay {d} must be in [0, 1)")));
            }
        }
        let mut params = ParamStore::new();
        let unet = DiffusionUnet::new(&mut params, &config.unet)?;
        if init {
            init_params(&mut params, seed);
        }
        let opt = Adam::new(config.adam, params.len());
        let alphas_cumprod = alphas_cumprod(&config.scheduler)?;
        let ema = config.ema_decay.map(|_| params.data.clone());
        Ok(DiffusionTrainer { config, seed, step: 0, unet, params, opt, ema, alphas_cumprod })
    }

    /// One optimisation step on scaled latents `[N, C, D, H, W]`.
    pub fn train_step(&mut self, latents: &[f32], dims: Dims) -> Result<DiffusionStepLog, TrainError> {
        self.train_step_part(latents, dims, &mut BatchPart::whole())
    }

    /// One step on this rank's part of a global batch: timesteps and noise are the part's slice
    /// of the global draws, and the gradient is averaged over the ranks by `part`.
    pub fn train_step_part(&mut self, latents: &[f32], dims: Dims, part: &mut BatchPart) -> Result<DiffusionStepLog, TrainError> {
        let step = self.step;
        self.unet.check_input(dims, dims.n)?;
        if latents.len() != dims.numel() {
            return Err(TrainError::Invalid(format!(
                "latents hold {} values, shape {:?} needs {}",
                latents.len(),
                dims.as_array(),
                dims.numel()
            )));
        }
        all_finite(step, "latents", latents)?;
        let t_max = self.config.scheduler.num_train_timesteps as u64;
        let first = part.first_sample(dims.n);
        let ts = uniform_ints_at(self.seed, step, Stream::Timesteps, first, dims.n, t_max);
        let per = dims.numel() / dims.n;
        let eps = normals_at(self.seed, step, Stream::DiffusionNoise, first * per as u64, latents.len());
        let mut x_t = Vec::with_capacity(latents.len());
        let mut target = Vec::with_capacity(latents.len());
        let prediction = self.config.scheduler.prediction_type;
        for (i, &t) in ts.iter().enumerate() {
            let a = self.alphas_cumprod[t as usize];
            let (x0, e) = (&latents[i * per..(i + 1) * per], &eps[i * per..(i + 1) * per]);
            x_t.extend(add_noise(x0, e, a));
            target.extend(training_target(prediction, x0, e, a));
        }
        let tf: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
        let p = &self.params.data;
        let fw = self.unet.forward(p, &x_t, dims, &tf, true)?;
        let (loss, dpred) = losses::mse(&fw.eps, &target)?;
        finite(step, "diffusion loss", loss)?;
        self.params.grad.iter_mut().for_each(|g| *g = 0.0);
        self.unet.backward(p, &mut self.params.grad, &fw, &dpred)?;
        part.reduce(Network::Unet, &mut self.params.grad)?;
        all_finite(step, "unet gradient", &self.params.grad)?;
        let lr = self.config.lr.lr_at(step);
        if !self.opt.step(&mut self.params.data, &self.params.grad, lr) {
            return Err(TrainError::Invalid("optimiser does not fit the parameters".into()));
        }
        self.update_ema();
        self.step += 1;
        Ok(DiffusionStepLog { step, loss, lr, timesteps: ts })
    }

    /// `ema = d * ema + (1 - d) * params` after the optimiser's `opt.t`-th update.
    fn update_ema(&mut self) {
        let (Some(decay), Some(ema)) = (self.config.ema_decay, self.ema.as_mut()) else {
            return;
        };
        let k = self.opt.t as f64;
        let d = (decay as f64).min((1.0 + k) / (10.0 + k)) as f32;
        for (e, &p) in ema.iter_mut().zip(&self.params.data) {
            *e = d * *e + (1.0 - d) * p;
        }
    }

    /// The parameters to sample with: the moving average when the run keeps one, else the last
    /// iterate (same names and shapes as `params`; gradients are not carried).
    pub fn inference_params(&self) -> ParamStore {
        ParamStore {
            data: self.ema.clone().unwrap_or_else(|| self.params.data.clone()),
            grad: Vec::new(),
            entries: self.params.entries.clone(),
        }
    }

    /// Atomic checkpoint of parameters, Adam state, the EMA (when kept), step and configuration.
    pub fn save(&self, path: &Path, extra: serde_json::Value) -> Result<(), TrainError> {
        let mut sections = vec![("unet.params", &self.params.data), ("unet.adam_m", &self.opt.m), ("unet.adam_v", &self.opt.v)];
        if let Some(ema) = &self.ema {
            sections.push(("unet.ema", ema));
        }
        let header = CheckpointHeader {
            kind: KIND.into(),
            step: self.step,
            seed: self.seed,
            config: serde_json::to_value(&self.config).map_err(|e| TrainError::Invalid(e.to_string()))?,
            tensors: tensor_table(&self.params),
            adam_steps: vec![self.opt.t],
            extra,
            sections: sections.iter().map(|(n, s)| SectionInfo { name: n.to_string(), len: s.len() as u64 }).collect(),
        };
        let bufs: Vec<&[f32]> = sections.iter().map(|(_, s)| s.as_slice()).collect();
        Ok(checkpoint::save(path, &header, &bufs)?)
    }

    pub fn resume(path: &Path) -> Result<(Self, serde_json::Value), TrainError> {
        let (h, mut secs) = checkpoint::load(path)?;
        if h.kind != KIND || h.adam_steps.len() != 1 {
            return Err(TrainError::Invalid(format!("{}: not a diffusion checkpoint (kind {})", path.display(), h.kind)));
        }
        let config: DiffusionConfig =
            serde_json::from_value(h.config.clone()).map_err(|e| TrainError::Invalid(format!("{}: config: {e}", path.display())))?;
        let want = if config.ema_decay.is_some() { 4 } else { 3 };
        if secs.len() != want {
            return Err(TrainError::Invalid(format!(
                "{}: {} sections, a diffusion checkpoint {} EMA holds {want}",
                path.display(),
                secs.len(),
                if config.ema_decay.is_some() { "with" } else { "without" }
            )));
        }
        let mut t = DiffusionTrainer::build(config, h.seed, false)?;
        if h.tensors != tensor_table(&t.params) || secs.iter().any(|s| s.len() != t.params.len()) {
            return Err(TrainError::Invalid(format!("{}: tensors do not match the configuration", path.display())));
        }
        if t.config.ema_decay.is_some() {
            t.ema = secs.pop();
        }
        t.opt.v = secs.pop().unwrap_or_default();
        t.opt.m = secs.pop().unwrap_or_default();
        t.params.data = secs.pop().unwrap_or_default();
        t.opt.t = h.adam_steps[0];
        t.step = h.step;
        Ok((t, h.extra))
    }
}
