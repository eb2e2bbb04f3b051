//! `brats-ldm export`: turns an autoencoder checkpoint and a diffusion checkpoint written by
//! `brats-ldm train` into a frozen weight blob. Output geometry comes from the training
//! preprocessing recorded in the checkpoints (voxel spacing, RAS, intensities [0, 1]); the latent
//! shape and scale factor from the diffusion run; provenance names the producer, data, steps and
//! date. Refuses a diffusion run whose latents came from a different autoencoder. The sampling
//! defaults stored with the schedule (sampler, steps, DDPM x0 clamp) come from the run's
//! configuration unless overridden here: they do not affect training.

use std::path::PathBuf;

use anyhow::{bail, Context};
use ldm_trainer::export::{export_blob, ExportSpec};
use ldm_trainer::train::diffusion::DiffusionTrainer;
use ldm_trainer::train::run::{checkpoint_path, params_hash, read_record, Stage};
use ldm_trainer::train::vae_gan::VaeGanTrainer;
use ldm_weights::{DType, OutputGeometry, Provenance, SamplerKind, SchedulerConfig};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeArg {
    F32,
    F16,
    Bf16,
}

#[derive(clap::Args, Debug)]
#[command(about = "Export trained autoencoder and diffusion checkpoints to a weight blob")]
pub struct ExportArgs {
    /// Autoencoder run folder or checkpoint (from `train autoencoder`).
    #[arg(long)]
    pub autoencoder: PathBuf,
    /// Diffusion run folder or checkpoint (from `train diffusion`).
    #[arg(long)]
    pub diffusion: PathBuf,
    /// Output blob (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Storage type of the tensors.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// Also store the encoder (lets the blob encode images, e.g. to fine-tune).
    #[arg(long)]
    pub include_encoder: bool,
    /// Default sampler stored in the blob (default: the run configuration's).
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerArg>,
    /// Default number of sampling steps stored in the blob (default: the run configuration's;
    /// DDPM always runs every training timestep).
    #[arg(long)]
    pub steps: Option<u32>,
    /// Whether DDPM and DDIM clamp their predicted x0 to [-1, 1] (MONAI's default; wrong for
    /// latents whose scaled values leave that range). Default: the run configuration's.
    #[arg(long)]
    pub clip_sample: Option<bool>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerArg {
    Ddim,
    Ddpm,
    Pndm,
}

/// The run's schedule with the sampling defaults overridden as asked. DDPM's step count is the
/// number of training timesteps (given explicitly, it must be that number).
pub fn sampling_defaults(
    mut s: SchedulerConfig,
    a: &ExportArgs,
) -> anyhow::Result<SchedulerConfig> {
    if let Some(k) = a.sampler {
        s.default_sampler = match k {
            SamplerArg::Ddim => SamplerKind::Ddim,
            SamplerArg::Ddpm => SamplerKind::Ddpm,
            SamplerArg::Pndm => SamplerKind::Pndm,
        };
    }
    if let Some(c) = a.clip_sample {
        s.ddpm.clip_sample = c;
        s.ddim.clip_sample = c;
    }
    let t = s.num_train_timesteps;
    match (s.default_sampler, a.steps) {
        (SamplerKind::Ddpm, Some(n)) if n != t => {
            bail!("--steps {n}: DDPM runs all {t} training timesteps")
        }
        (SamplerKind::Ddpm, _) => s.default_steps = t,
        (kind, Some(n)) if n == 0 || n > t => {
            bail!(
                "--steps {n}: {} takes 1 to {t} steps",
                kind.name().to_uppercase()
            )
        }
        (_, Some(n)) => s.default_steps = n,
        (_, None) => {}
    }
    Ok(s)
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock (days-to-civil conversion).
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let ae_path = checkpoint_path(&a.autoencoder);
    let df_path = checkpoint_path(&a.diffusion);
    let (ae, ae_extra) = VaeGanTrainer::resume(&ae_path)
        .with_context(|| format!("loading the autoencoder checkpoint {}", ae_path.display()))?;
    let (df, df_extra) = DiffusionTrainer::resume(&df_path)
        .with_context(|| format!("loading the diffusion checkpoint {}", df_path.display()))?;
    let ae_rec = read_record(&ae_extra, &ae_path)?;
    let df_rec = read_record(&df_extra, &df_path)?;
    if ae_rec.stage != Stage::Autoencoder || df_rec.stage != Stage::Diffusion {
        bail!("--autoencoder must be an autoencoder run and --diffusion a diffusion run");
    }
    let hash = params_hash(&ae.ae_params.data);
    match &df_rec.autoencoder {
        Some(r) if r.params_hash == hash => {}
        Some(r) => bail!(
            "{} was trained on latents of another autoencoder ({} at step {}), not {} (step {})",
            df_path.display(),
            r.path,
            r.step,
            ae_path.display(),
            ae.step
        ),
        None => bail!("{}: the run record names no autoencoder", df_path.display()),
    }
    let latent: [u32; 4] = match df_rec.sample_shape.as_slice() {
        &[c, d, h, w] => [c, d, h, w].map(|v| v as u32),
        other => bail!(
            "{}: recorded latent shape {other:?} is not [C, D, H, W]",
            df_path.display()
        ),
    };
    let pre = &df_rec.data.preprocess;
    let geometry = OutputGeometry {
        spacing_mm: pre.spacing_mm.map(|s| s as f32),
        orientation: "RAS".into(),
        intensity_range: [0.0, 1.0],
    };
    let provenance = Provenance {
        producer: format!("brats-ldm {} train", env!("CARGO_PKG_VERSION")),
        data: format!(
            "autoencoder {} steps, diffusion {} steps (scale factor {}); data: {}",
            ae.step, df.step, df.config.scale_factor, df_rec.data.description
        ),
        steps: ae.step + df.step,
        date: utc_date(),
    };
    let dtype = match a.dtype {
        DTypeArg::F32 => DType::F32,
        DTypeArg::F16 => DType::F16,
        DTypeArg::Bf16 => DType::BF16,
    };
    // The moving average when the run kept one (config `ema_decay`), else the last iterate.
    let unet_params = df.inference_params();
    let spec = ExportSpec {
        autoencoder: Some((&ae.ae, &ae.ae_params)),
        include_encoder: a.include_encoder,
        unet: Some((&df.unet, &unet_params)),
        scheduler: sampling_defaults(df.config.scheduler.clone(), &a)?,
        scale_factor: df.config.scale_factor,
        latent_shape: latent,
        geometry,
        provenance,
        dtype,
    };
    if let Some(dir) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    export_blob(&a.out, &spec).with_context(|| format!("writing {}", a.out.display()))?;
    let bytes = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({bytes} bytes): decoder{} + UNet, latent {:?}, scale factor {}, {} mm",
        a.out.display(),
        if a.include_encoder { " + encoder" } else { "" },
        latent,
        df.config.scale_factor,
        pre.spacing_mm[0]
    );
    Ok(())
}
