//! The training loop driver behind `brats-ldm train`: for one stage (autoencoder or diffusion) it
//! draws batches from preprocessed volumes, runs the trainer's steps, appends one JSON line per
//! step to `RUN_DIR/log.jsonl`, writes `RUN_DIR/checkpoint.ckpt` every `checkpoint_every` steps
//! and at the end, and resumes a killed run bit-exactly.
//!
//! Bit-exact resume needs no sampler state in the checkpoint: the k-th training sample is a
//! pure function of (seed, k) — epoch e = k / n visits the volumes in a permutation drawn from
//! (seed, e), and the patch position (autoencoder) or latent sampling noise (diffusion) comes
//! from (seed, k) — and the trainers' own randomness is keyed by (seed, step). On resume the log
//! is cut back to the checkpoint's step, so it reads as if the run had never stopped.
//!
//! With a `validation` section, each checkpoint also appends a line marked `"validation": true`:
//! the held-out volumes' reconstruction SSIM/PSNR/L1 (autoencoder) or the pairwise MS-SSIM of a
//! few samples (diffusion), computed by [`super::validation`].
//!
//! Data-parallel runs ([`RunOptions::parallel`], see [`super::distributed`]): rank r of W takes
//! the samples `(step W + r) b ..` of the global stream, rank 0's state is broadcast at the
//! start, gradients are averaged before each optimiser step, and only rank 0 writes the run
//! folder (every rank reads it on `--resume`). The checkpoint records the world size; resuming
//! with the same world size continues bit-exactly, with another one the data stream continues
//! at sample `step b W_new` (see docs/distributed.md).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::diffusion::{scale_factor, DiffusionConfig, DiffusionTrainer};
use super::distributed::{BatchPart, DataParallel, Network, Parallel};
use super::order::{sample_rng, Order};
use super::record::check_record;
pub use super::record::{params_hash, read_record, AutoencoderRef, DataRecord, RunRecord, Stage, CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, LOSS_PNG};
use super::run_dir::{io_err, log_line, open_log, trim_log};
pub use super::run_dir::{checkpoint_path, read_log};
use super::setup::TrainConfig;
use super::vae_gan::VaeGanTrainer;
use super::validation;
use super::TrainError;
use crate::export::{collect, ExportSpec};
use ldm_metrics::ssim::{SsimParams, MS_SSIM_WEIGHTS};
use ldm_weights::{write_blob, Blob, DType, OutputGeometry, Provenance};
use crate::data::{random_crop, Volume};
use crate::init::{normals, Stream};
use crate::layers::Dims;

/// What the driver tells its caller while it runs.
pub enum Event<'a> {
    /// One step finished; `line` is what was appended to the log.
    Step { step: u64, total: u64, loss: f32, line: &'a serde_json::Value },
    /// A checkpoint was written after `step` completed steps.
    Checkpoint { step: u64 },
}

/// A finished (or already complete) run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Step the run started from (0, or the checkpoint's when resumed).
    pub start_step: u64,
    pub end_step: u64,
    /// Loss of the first and last step run in this invocation (None when nothing ran).
    pub first_loss: Option<f32>,
    pub last_loss: Option<f32>,
    pub wall_s: f64,
    pub checkpoint: PathBuf,
}

/// Settings of one invocation.
pub struct RunOptions<'a> {
    pub config: &'a TrainConfig,
    pub volumes: &'a [Volume],
    pub data_description: String,
    pub out: &'a Path,
    /// Continue from `out/checkpoint.ckpt` (which must exist).
    pub resume: bool,
    /// Total steps to reach (defaults to the stage's `steps`).
    pub steps: Option<u64>,
    /// Overrides the stage's seed (new runs only; a resumed run keeps its checkpoint's seed).
    pub seed: Option<u64>,
    /// This process's data-parallel group (None: a single process).
    pub parallel: Option<Parallel<'a>>,
}

/// Common preparation: run directory, config copy, checkpoint presence, log trimming.
fn prepare_dir(o: &RunOptions, stage: Stage, writes: bool) -> Result<PathBuf, TrainError> {
    if writes {
        fs::create_dir_all(o.out).map_err(|e| io_err(o.out, e))?;
    }
    let ckpt = o.out.join(CHECKPOINT_FILE);
    if o.resume && !ckpt.is_file() {
        return Err(TrainError::Invalid(format!("--resume: {} holds no checkpoint ({CHECKPOINT_FILE})", o.out.display())));
    }
    if !o.resume && ckpt.exists() {
        return Err(TrainError::Invalid(format!(
            "{} already holds a {} checkpoint; pass --resume to continue it or choose another output folder",
            o.out.display(),
            stage.name()
        )));
    }
    if o.volumes.is_empty() {
        return Err(TrainError::Invalid("no training volumes".into()));
    }
    if let Some(v) = o.volumes.iter().find(|v| v.dims != o.config.data.roi) {
        return Err(TrainError::Invalid(format!("a training volume has shape {:?}, data.roi is {:?}", v.dims, o.config.data.roi)));
    }
    if !o.resume && writes {
        let text = serde_json::to_string_pretty(o.config).map_err(|e| TrainError::Invalid(e.to_string()))?;
        let p = o.out.join(CONFIG_FILE);
        ldm_io::atomic::write_bytes(&p, text.as_bytes()).map_err(|e| io_err(&p, e))?;
        let log = o.out.join(LOG_FILE);
        if log.exists() {
            fs::remove_file(&log).map_err(|e| io_err(&log, e))?;
        }
    }
    Ok(ckpt)
}

/// What both stages do around their optimiser steps: one log line and progress event per step, a
/// checkpoint every `checkpoint_every` steps and at `total`, and the summary at the end.
struct StepBook<'a> {
    /// None on the ranks that do not write (they log nothing and report no events).
    log: Option<File>,
    out: &'a Path,
    stage: Stage,
    started: Instant,
    total: u64,
    checkpoint_every: u64,
    start_step: u64,
    first: Option<f32>,
    last: Option<f32>,
}

impl<'a> StepBook<'a> {
    /// Opens the run's log (appending) for a loop that runs from `start_step` to `total`.
    fn open(
        out: &'a Path,
        stage: Stage,
        started: Instant,
        (total, checkpoint_every, start_step): (u64, u64, u64),
        writes: bool,
    ) -> Result<Self, TrainError> {
        let log = if writes { Some(open_log(out)?) } else { None };
        Ok(StepBook { log, out, stage, started, total, checkpoint_every, start_step, first: None, last: None })
    }

    /// Records step `rec_step` (the trainer now at `now` completed steps); `save` writes the checkpoint.
    fn record<R: Serialize>(
        &mut self,
        rec: &R,
        rec_step: u64,
        now: u64,
        loss: f32,
        on_event: &mut dyn FnMut(Event),
        save: impl FnOnce() -> Result<(), TrainError>,
    ) -> Result<bool, TrainError> {
        self.first.get_or_insert(loss);
        self.last = Some(loss);
        if let Some(log) = self.log.as_mut() {
            let line = log_line(log, self.out, self.stage, rec, self.started.elapsed().as_secs_f64())?;
            on_event(Event::Step { step: rec_step, total: self.total, loss, line: &line });
        }
        if now.is_multiple_of(self.checkpoint_every) || now == self.total {
            if let Some(log) = self.log.as_ref() {
                log.sync_data().map_err(|e| io_err(&self.out.join(LOG_FILE), e))?;
            }
            save()?;
            if self.log.is_some() {
                on_event(Event::Checkpoint { step: now });
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Appends a validation line for step `rec_step` (kept on resume like the step's own line).
    fn record_validation(&mut self, rec_step: u64, fields: serde_json::Value) -> Result<(), TrainError> {
        let mut v = fields;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("step".into(), serde_json::json!(rec_step));
            m.insert("validation".into(), serde_json::json!(true));
        }
        let Some(log) = self.log.as_mut() else { return Ok(()) };
        log_line(log, self.out, self.stage, &v, self.started.elapsed().as_secs_f64())?;
        log.sync_data().map_err(|e| io_err(&self.out.join(LOG_FILE), e))
    }

    /// Writes the checkpoint if none exists yet (nothing ran) and sums the run up.
    fn finish(
        self,
        end_step: u64,
        ckpt: PathBuf,
        save: impl FnOnce() -> Result<(), TrainError>,
    ) -> Result<RunSummary, TrainError> {
        if self.log.is_some() && !ckpt.is_file() {
            save()?;
        }
        Ok(RunSummary {
            start_step: self.start_step,
            end_step,
            first_loss: self.first,
            last_loss: self.last,
            wall_s: self.started.elapsed().as_secs_f64(),
            checkpoint: ckpt,
        })
    }
}

/// Trains (or resumes) the autoencoder stage on roi-sized preprocessed volumes.
pub fn run_autoencoder(o: &RunOptions, on_event: &mut dyn FnMut(Event)) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    let cfg = o.config;
    cfg.validate()?;
    let st = &cfg.autoencoder;
    let mut dp = DataParallel::new(o.parallel);
    let writes = dp.role().writes();
    let ckpt = prepare_dir(o, Stage::Autoencoder, writes)?;
    let holdout = cfg.validation.holdout;
    if holdout >= o.volumes.len() {
        return Err(TrainError::Invalid(format!(
            "validation.holdout {holdout} leaves no training volumes out of {}",
            o.volumes.len()
        )));
    }
    let (train, held_out) = o.volumes.split_at(o.volumes.len() - holdout);
    let record = RunRecord {
        stage: Stage::Autoencoder,
        data: DataRecord { description: o.data_description.clone(), volumes: train.len(), preprocess: cfg.data.clone() },
        batch_size: st.batch_size,
        sample_shape: st.patch.to_vec(),
        autoencoder: None,
        sample_latents: false,
        world_size: dp.world(),
    };
    let mut t = if o.resume {
        let (t, extra) = VaeGanTrainer::resume(&ckpt)?;
        if t.config != st.trainer {
            return Err(TrainError::Invalid(format!(
                "{}: the checkpoint's autoencoder configuration differs from the given one",
                ckpt.display()
            )));
        }
        check_record(&ckpt, &extra, &record)?;
        if writes {
            trim_log(&o.out.join(LOG_FILE), t.step)?;
        }
        t
    } else {
        VaeGanTrainer::new(st.trainer.clone(), o.seed.unwrap_or(st.seed))?
    };
    let mut counters = [t.step, t.seed, t.opt_g.t, t.opt_d.t];
    dp.broadcast(
        &mut [&mut t.ae_params.data, &mut t.opt_g.m, &mut t.opt_g.v, &mut t.disc_params.data, &mut t.opt_d.m, &mut t.opt_d.v],
        &mut counters,
    )?;
    [t.step, t.seed, t.opt_g.t, t.opt_d.t] = counters;
    dp.plan(Network::Autoencoder, &t.ae_params)?;
    dp.plan(Network::Discriminator, &t.disc_params)?;
    let extra = serde_json::to_value(&record).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let total = o.steps.unwrap_or(st.steps);
    let mut book = StepBook::open(o.out, Stage::Autoencoder, started, (total, st.checkpoint_every, t.step), writes)?;
    let mut order = Order::new(t.seed, train.len());
    let b = st.batch_size;
    let [px, py, pz] = st.patch;
    let dims = Dims::new(b, 1, px, py, pz);
    let shard = dp.shard();
    let mut reduce = |net: Network, g: &mut [f32]| dp.reduce(net, g);
    let mut part = BatchPart::new(shard, &mut reduce);
    while t.step < total {
        let mut images = Vec::with_capacity(dims.numel());
        for i in 0..b {
            let k = shard.sample_index(t.step, b, i);
            let v = &train[order.volume(k)];
            let mut rng = sample_rng(t.seed, k);
            images.extend_from_slice(&random_crop(v, st.patch, &mut rng).data);
        }
        let mut rec = t.train_step_part(&images, dims, &mut part)?;
        dp.mean_vae_log(&mut rec)?;
        let state = [&t.ae_params.data[..], &t.opt_g.m, &t.opt_g.v, &t.disc_params.data, &t.opt_d.m, &t.opt_d.v];
        let saved =
            book.record(&rec, rec.step, t.step, rec.loss_g, on_event, || dp.checkpoint(&state, || t.save(&ckpt, extra.clone())))?;
        if saved && writes && !held_out.is_empty() {
            book.record_validation(rec.step, reconstruction_line(&t, held_out)?)?;
        }
    }
    let end_step = t.step;
    book.finish(end_step, ckpt.clone(), || t.save(&ckpt, extra))
}

/// Reconstruction SSIM, PSNR and L1 (MONAI's defaults: Gaussian 11^3 window, data range 1)
/// averaged over the held-out volumes, as log fields.
fn reconstruction_line(t: &VaeGanTrainer, held_out: &[Volume]) -> Result<serde_json::Value, TrainError> {
    let p = SsimParams::default();
    let mut items = Vec::with_capacity(held_out.len());
    for v in held_out {
        let y = validation::reconstruct(&t.ae, &t.ae_params.data, &v.data, v.dims)?;
        items.push(validation::compare(&v.data, &y, v.dims, &p, None)?);
    }
    let m = validation::mean(&items).ok_or_else(|| TrainError::Invalid("no held-out volumes".into()))?;
    Ok(serde_json::json!({ "val_volumes": items.len(), "val_ssim": m.ssim, "val_psnr": m.psnr, "val_l1": m.l1 }))
}

/// Pairwise MS-SSIM (or SSIM) of a few samples drawn with the current weights, as log fields.
fn diversity_line(cfg: &TrainConfig, ae: &VaeGanTrainer, t: &DiffusionTrainer, latent: Dims) -> Result<serde_json::Value, TrainError> {
    let unet_params = t.inference_params();
    let spec = ExportSpec {
        autoencoder: Some((&ae.ae, &ae.ae_params)),
        include_encoder: false,
        unet: Some((&t.unet, &unet_params)),
        scheduler: t.config.scheduler.clone(),
        scale_factor: t.config.scale_factor,
        latent_shape: [latent.c, latent.d, latent.h, latent.w].map(|v| v as u32),
        geometry: OutputGeometry { spacing_mm: cfg.data.spacing_mm.map(|s| s as f32), orientation: "RAS".into(), intensity_range: [0.0, 1.0] },
        provenance: Provenance { producer: "brats-ldm train (diversity check)".into(), data: String::new(), steps: t.step, date: String::new() },
        dtype: DType::F32,
    };
    let fail = |e: String| TrainError::Invalid(format!("diversity check: {e}"));
    let (config, tensors) = collect(&spec).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    write_blob(&mut bytes, &config, &tensors).map_err(|e| fail(e.to_string()))?;
    let blob = Blob::from_bytes(bytes).map_err(|e| fail(e.to_string()))?;
    let v = &cfg.validation;
    let d = validation::sample_diversity(&blob, v.diversity_samples, v.diversity_steps, None, &SsimParams::default(), &MS_SSIM_WEIGHTS)?;
    Ok(serde_json::json!({ "diversity_samples": d.samples, "diversity_metric": d.metric, "diversity_mean": d.mean, "diversity_std": d.std }))
}

/// Latent statistics of every volume under the autoencoder (mu, sigma per volume).
struct Latents {
    mu: Vec<Vec<f32>>,
    sigma: Vec<Vec<f32>>,
    dims: Dims,
}

fn encode_all(ae: &VaeGanTrainer, volumes: &[Volume]) -> Result<Latents, TrainError> {
    let mut mu = Vec::with_capacity(volumes.len());
    let mut sigma = Vec::with_capacity(volumes.len());
    let mut dims = Dims::new(1, 0, 0, 0, 0);
    for v in volumes {
        let [x, y, z] = v.dims;
        let (m, s, ld) = ae.ae.encode(&ae.ae_params.data, &v.data, Dims::new(1, 1, x, y, z))?;
        mu.push(m);
        sigma.push(s);
        dims = ld;
    }
    Ok(Latents { mu, sigma, dims })
}

/// Salt of the latent draws used for the scale factor (kept apart from the training draws).
const SCALE_SALT: u64 = 0x5CA1_E000_0000_0000;

/// Trains (or resumes) the diffusion stage on latents of the volumes under the autoencoder in
/// `autoencoder` (a run directory or checkpoint). The scale factor `1 / std(z)` is computed once
/// over one latent draw of every volume (or the means, with `sample_latents: false`) and stored
/// in the checkpoint's configuration.
pub fn run_diffusion(o: &RunOptions, autoencoder: &Path, on_event: &mut dyn FnMut(Event)) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    let cfg = o.config;
    cfg.validate()?;
    let st = &cfg.diffusion;
    let ae_path = checkpoint_path(autoencoder);
    if !ae_path.is_file() {
        return Err(TrainError::Invalid(format!("--autoencoder {}: no autoencoder checkpoint there", autoencoder.display())));
    }
    let (ae, _) = VaeGanTrainer::resume(&ae_path)?;
    let enc = &ae.config.encoder;
    if enc.latent_channels != st.unet.in_channels {
        return Err(TrainError::Invalid(format!(
            "{}: the autoencoder has {} latent channels, diffusion.unet takes {}",
            ae_path.display(),
            enc.latent_channels,
            st.unet.in_channels
        )));
    }
    let mut dp = DataParallel::new(o.parallel);
    let writes = dp.role().writes();
    let ckpt = prepare_dir(o, Stage::Diffusion, writes)?;
    let mut lat = encode_all(&ae, o.volumes)?;
    if !st.sample_latents {
        lat.sigma.iter_mut().for_each(|s| s.iter_mut().for_each(|v| *v = 0.0));
    }
    let ld = lat.dims;
    let uf = 1usize << st.unet.num_channels.len().saturating_sub(1);
    if [ld.d, ld.h, ld.w].iter().any(|&s| s % uf != 0) {
        return Err(TrainError::Invalid(format!("latent size {:?} is not divisible by {uf} for the UNet", [ld.d, ld.h, ld.w])));
    }
    let record = RunRecord {
        stage: Stage::Diffusion,
        data: DataRecord { description: o.data_description.clone(), volumes: o.volumes.len(), preprocess: cfg.data.clone() },
        batch_size: st.batch_size,
        sample_shape: vec![ld.c, ld.d, ld.h, ld.w],
        autoencoder: Some(AutoencoderRef {
            path: ae_path.display().to_string(),
            step: ae.step,
            params_hash: params_hash(&ae.ae_params.data),
        }),
        sample_latents: st.sample_latents,
        world_size: dp.world(),
    };
    let mut t = if o.resume {
        let (t, extra) = DiffusionTrainer::resume(&ckpt)?;
        check_record(&ckpt, &extra, &record)?;
        let saved: RunRecord = serde_json::from_value(extra).map_err(|e| TrainError::Invalid(e.to_string()))?;
        if saved.autoencoder.as_ref().map(|a| &a.params_hash) != record.autoencoder.as_ref().map(|a| &a.params_hash) {
            return Err(TrainError::Invalid(format!(
                "{}: this run's latents came from another autoencoder ({}); give the same --autoencoder",
                ckpt.display(),
                saved.autoencoder.map(|a| a.path).unwrap_or_default()
            )));
        }
        let want = DiffusionConfig { scale_factor: t.config.scale_factor, ..stage_config(cfg, 1.0) };
        if t.config != want {
            return Err(TrainError::Invalid(format!(
                "{}: the checkpoint's diffusion configuration differs from the given one",
                ckpt.display()
            )));
        }
        if writes {
            trim_log(&o.out.join(LOG_FILE), t.step)?;
        }
        t
    } else {
        let seed = o.seed.unwrap_or(st.seed);
        let mut all = Vec::with_capacity(lat.mu.len() * ld.numel());
        for (i, (m, s)) in lat.mu.iter().zip(&lat.sigma).enumerate() {
            let n = normals(seed ^ SCALE_SALT, i as u64, Stream::Encode, m.len());
            all.extend(m.iter().zip(s).zip(&n).map(|((m, s), e)| m + s * e));
        }
        DiffusionTrainer::new(stage_config(cfg, scale_factor(&all)?), seed)?
    };
    let mut counters = [t.step, t.seed, t.opt.t];
    let mut scale = [t.config.scale_factor];
    let mut bufs: Vec<&mut [f32]> = vec![&mut t.params.data, &mut t.opt.m, &mut t.opt.v, &mut scale];
    bufs.extend(t.ema.as_deref_mut());
    dp.broadcast(&mut bufs, &mut counters)?;
    [t.step, t.seed, t.opt.t] = counters;
    t.config.scale_factor = scale[0];
    dp.plan(Network::Unet, &t.params)?;
    let extra = serde_json::to_value(&record).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let total = o.steps.unwrap_or(st.steps);
    let mut book = StepBook::open(o.out, Stage::Diffusion, started, (total, st.checkpoint_every, t.step), writes)?;
    let mut order = Order::new(t.seed, o.volumes.len());
    let b = st.batch_size;
    let dims = Dims::new(b, ld.c, ld.d, ld.h, ld.w);
    let per = ld.numel();
    let s = t.config.scale_factor;
    let shard = dp.shard();
    let mut reduce = |net: Network, g: &mut [f32]| dp.reduce(net, g);
    let mut part = BatchPart::new(shard, &mut reduce);
    while t.step < total {
        let mut z = Vec::with_capacity(b * per);
        for i in 0..b {
            let k = shard.sample_index(t.step, b, i);
            let v = order.volume(k);
            let n = normals(t.seed, k, Stream::Encode, per);
            z.extend(lat.mu[v].iter().zip(&lat.sigma[v]).zip(&n).map(|((m, sg), e)| (m + sg * e) * s));
        }
        let mut rec = t.train_step_part(&z, dims, &mut part)?;
        dp.mean_diffusion_log(&mut rec)?;
        let mut state = vec![&t.params.data[..], &t.opt.m, &t.opt.v];
        state.extend(t.ema.as_deref());
        let saved =
            book.record(&rec, rec.step, t.step, rec.loss, on_event, || dp.checkpoint(&state, || t.save(&ckpt, extra.clone())))?;
        if saved && writes && cfg.validation.diversity_samples >= 2 {
            book.record_validation(rec.step, diversity_line(cfg, &ae, &t, ld)?)?;
        }
    }
    let end_step = t.step;
    book.finish(end_step, ckpt.clone(), || t.save(&ckpt, extra))
}

/// The trainer configuration of the diffusion stage with scale factor `s`.
pub fn stage_config(cfg: &TrainConfig, s: f32) -> DiffusionConfig {
    let st = &cfg.diffusion;
    DiffusionConfig {
        unet: st.unet.clone(),
        scheduler: st.scheduler.clone(),
        adam: st.adam,
        lr: st.lr.clone(),
        scale_factor: s,
        ema_decay: st.ema_decay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_bad_settings_are_named() {
        TrainConfig::cpu_small().validate().unwrap();
        TrainConfig::bundle().validate().unwrap();
        let mut c = TrainConfig::cpu_small();
        c.autoencoder.patch = [44, 48, 32];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("larger than data.roi"), "{e}");
        let mut c = TrainConfig::cpu_small();
        c.diffusion.batch_size = 0;
        assert!(c.validate().unwrap_err().to_string().contains("diffusion: batch_size"));
        let mut c = TrainConfig::cpu_small();
        c.data.roi = [40, 48, 36];
        c.autoencoder.patch = [40, 48, 36];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("latent size [10, 12, 9]"), "{e}");
        assert!(TrainConfig::from_json("{}", "x.json").unwrap_err().to_string().starts_with("x.json: not a training configuration"));
    }
}
