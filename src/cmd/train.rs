//! `brats-ldm train autoencoder|diffusion`: resolves the configuration (file, preset, or the run
//! folder's own copy on --resume), loads the data through the preprocessing cache (optionally
//! downloading Task01 first), runs the trainer's loop driver with a progress bar (hidden when
//! stderr is not a terminal), and keeps `RUN_DIR/loss.png` up to date at every checkpoint.
//!
//! Data parallelism: `--nproc-per-node N` starts N local copies of this command with torchrun's
//! environment and supervises them (`ldm_dist::launch`); a process started with that environment
//! (by this launcher, torchrun, srun or a Kubernetes operator) joins the rendezvous, and rank 0
//! alone prints and writes (docs/distributed.md).

mod plot;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ldm_dist::group::{fingerprint_bytes, fingerprint_f32};
use ldm_dist::launch::{launch, LaunchOptions, LAUNCHED_ENV};
use ldm_dist::{rendezvous, HostGroup, RendezvousOptions, WorldSpec};
use ldm_trainer::data::download::{download_dataset, DownloadOptions, TASK01_MD5, TASK01_URL};
use ldm_trainer::data::{discover, load_set, PreprocessCache};
use ldm_trainer::train::distributed::{Parallel, DEFAULT_BUCKET_MB};
use ldm_trainer::train::run::{self, Event, RunOptions, CONFIG_FILE, LOG_FILE, LOSS_PNG};
use ldm_trainer::train::setup::{TrainConfig, PRESETS};

pub use plot::write_loss_png;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageArg {
    /// The VAE-GAN stage (autoencoder + patch discriminator).
    Autoencoder,
    /// The latent diffusion UNet (needs --autoencoder).
    Diffusion,
}

#[derive(clap::Args, Debug)]
#[command(about = "Train the autoencoder (VAE-GAN) or the latent diffusion UNet on CPU")]
pub struct TrainArgs {
    /// Which stage to train.
    #[arg(value_enum)]
    pub stage: StageArg,
    /// Training data: a Task01 folder (dataset.json), a folder of NIfTI files, or one file.
    #[arg(long)]
    pub data: PathBuf,
    /// Training configuration file (JSON; see configs/).
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Built-in configuration: bundle or cpu-small.
    #[arg(long)]
    pub preset: Option<String>,
    /// Run folder: config.json, log.jsonl, checkpoint.ckpt, loss.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its checkpoint (bit-exactly).
    #[arg(long)]
    pub resume: bool,
    /// Total steps to reach (default: the configuration's).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Seed of a new run (default: the configuration's).
    #[arg(long, conflicts_with = "resume")]
    pub seed: Option<u64>,
    /// Download and extract the Task01 archive into --data first (about 7 GB).
    #[arg(long)]
    pub download: bool,
    /// Diffusion stage: the autoencoder run folder or checkpoint whose latents to learn.
    #[arg(long)]
    pub autoencoder: Option<PathBuf>,
    /// Preprocessing cache folder (default: RUN_DIR/prep-cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Leave out files that fail to load (with a warning) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Data-parallel training in N local processes (torchrun's --nproc_per_node); the
    /// configuration's batch_size is per process.
    #[arg(long, value_name = "N")]
    pub nproc_per_node: Option<usize>,
    /// Data-parallel runs: seconds to wait for every rank to join the rendezvous.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    pub rendezvous_timeout: f64,
    /// Data-parallel runs: seconds one collective operation may wait for a peer.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800.0)]
    pub dist_timeout: f64,
    /// Data-parallel runs: gradient bucket size in MB.
    #[arg(long, value_name = "MB", default_value_t = DEFAULT_BUCKET_MB)]
    pub bucket_mb: f64,
}

/// The configuration of this invocation.
fn resolve_config(a: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let saved = a.out.join(CONFIG_FILE);
    let cfg = match (&a.config, &a.preset) {
        (Some(p), _) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the training configuration {}", p.display()))?;
            TrainConfig::from_json(&text, &p.display().to_string())?
        }
        (None, Some(name)) => TrainConfig::preset(name)?,
        (None, None) if a.resume && saved.is_file() => {
            let text = std::fs::read_to_string(&saved)
                .with_context(|| format!("reading {}", saved.display()))?;
            TrainConfig::from_json(&text, &saved.display().to_string())?
        }
        (None, None) => bail!(
            "give --config FILE or --preset NAME ({})",
            PRESETS.join(", ")
        ),
    };
    Ok(cfg)
}

fn progress_bar(total: u64, start: u64, stage: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} steps, {msg} ({elapsed} elapsed, ~{eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
    } else {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_prefix(stage.to_string());
    pb.set_position(start);
    pb
}

/// `--nproc-per-node N` in the process the user started: runs N workers of this same command.
fn launch_local(n: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--nproc-per-node must be at least 1");
    }
    if let Ok(spec) = WorldSpec::from_env() {
        if spec.kind != ldm_dist::LaunchKind::Single {
            bail!("--nproc-per-node starts its own processes; under torchrun, srun or a cluster launcher leave it out");
        }
    }
    let program =
        std::env::current_exe().context("finding the brats-ldm executable to start the ranks")?;
    let opts = LaunchOptions {
        program,
        args: std::env::args_os().skip(1).collect(),
        nproc: n,
        env: Vec::new(),
        grace: std::time::Duration::from_secs(10),
    };
    launch(&opts)?;
    Ok(())
}

fn seconds(v: f64, flag: &str) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} {v}: give a positive number of seconds"))
}

/// Joins the data-parallel group of this process's launch environment (a group of one without).
fn join_group(a: &TrainArgs, cfg: &TrainConfig) -> anyhow::Result<HostGroup> {
    let spec = WorldSpec::from_env()?;
    if !(a.bucket_mb > 0.0 && a.bucket_mb.is_finite()) {
        bail!("--bucket-mb {}: give a positive size", a.bucket_mb);
    }
    let run = serde_json::json!({
        "stage": format!("{:?}", a.stage),
        "config": cfg,
        "resume": a.resume,
        "steps": a.steps,
        "seed": a.seed,
        "bucket_mb": a.bucket_mb,
    });
    let opts = RendezvousOptions {
        timeout: seconds(a.rendezvous_timeout, "--rendezvous-timeout")?,
        op_timeout: seconds(a.dist_timeout, "--dist-timeout")?,
        fingerprint: fingerprint_bytes(run.to_string().as_bytes()),
        blob: Vec::new(),
    };
    let (group, _) = rendezvous(&spec, &opts)?;
    Ok(group)
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let cfg = resolve_config(&a)?;
    if a.stage == StageArg::Diffusion && a.autoencoder.is_none() {
        bail!("train diffusion needs --autoencoder RUN_DIR_OR_CHECKPOINT (the trained autoencoder whose latents it learns)");
    }
    if a.stage == StageArg::Autoencoder && a.autoencoder.is_some() {
        bail!("--autoencoder belongs to the diffusion stage");
    }
    if a.steps == Some(0) {
        bail!("--steps must be at least 1");
    }
    if let Some(n) = a.nproc_per_node {
        if std::env::var_os(LAUNCHED_ENV).is_none() {
            return launch_local(n);
        }
    }
    ldm_dist::launch::exit_when_launcher_exits();
    let group = join_group(&a, &cfg)?;
    let root = group.is_root();
    // Rank 0 downloads and preprocesses first (filling the cache); the others then find both done.
    if !root {
        group.barrier()?;
    }
    let data_root = if a.download {
        let opts = DownloadOptions {
            url: TASK01_URL.into(),
            md5: Some(TASK01_MD5.into()),
            ..Default::default()
        };
        download_dataset(&a.data, &opts)
            .with_context(|| format!("downloading Task01 into {}", a.data.display()))?
    } else {
        if !a.data.exists() {
            bail!(
                "--data {}: no such file or folder (use --download to fetch Task01 there)",
                a.data.display()
            );
        }
        a.data.clone()
    };
    let ds = discover(&data_root, false)
        .with_context(|| format!("finding training images in {}", data_root.display()))?;
    let pre = cfg.data.preprocess();
    let cache = PreprocessCache::new(a.cache.clone().unwrap_or_else(|| a.out.join("prep-cache")));
    let n = ds.images.len();
    if root {
        eprintln!(
            "preprocessing {n} image(s) from {} ({})",
            data_root.display(),
            pre.fingerprint()
        );
    }
    let set = load_set(&ds.images, &pre, Some(&cache), a.skip_bad, |_, _, _| {})
        .with_context(|| format!("preprocessing the images of {}", data_root.display()))?;
    for (p, e) in &set.skipped {
        eprintln!("warning: left out {}: {e}", p.display());
    }
    if set.items.is_empty() {
        bail!("no usable training image in {}", data_root.display());
    }
    let volumes: Vec<_> = set.items.into_iter().map(|(_, v)| v).collect();
    if root {
        group.barrier()?;
    }
    // Same data on every rank: the number of volumes, their shapes and first values.
    let heads: Vec<&[f32]> = volumes
        .iter()
        .map(|v| &v.data[..v.data.len().min(4096)])
        .collect();
    let shapes: Vec<f32> = volumes
        .iter()
        .flat_map(|v| v.dims.map(|d| d as f32))
        .collect();
    let mut parts = heads;
    parts.push(&shapes);
    group.check_identical("the training volumes", fingerprint_f32(&parts))?;
    let description = format!(
        "{} ({:?}, {} volumes; {})",
        data_root.display(),
        ds.kind,
        volumes.len(),
        pre.fingerprint()
    );
    let opts = RunOptions {
        config: &cfg,
        volumes: &volumes,
        data_description: description,
        out: &a.out,
        resume: a.resume,
        steps: a.steps,
        seed: a.seed,
        parallel: (group.world_size() > 1).then_some(Parallel {
            group: &group,
            bucket_mb: a.bucket_mb,
        }),
    };
    let stage = match a.stage {
        StageArg::Autoencoder => "autoencoder",
        StageArg::Diffusion => "diffusion",
    };
    let total = a.steps.unwrap_or(match a.stage {
        StageArg::Autoencoder => cfg.autoencoder.steps,
        StageArg::Diffusion => cfg.diffusion.steps,
    });
    let log_path = a.out.join(LOG_FILE);
    let png_path = a.out.join(LOSS_PNG);
    let mut pb: Option<ProgressBar> = None;
    let mut plot_err: Option<anyhow::Error> = None;
    let mut on_event = |e: Event| match e {
        Event::Step { step, loss, .. } => {
            let bar = pb.get_or_insert_with(|| progress_bar(total, step, stage));
            bar.set_position(step + 1);
            bar.set_message(format!("loss {loss:.5}"));
        }
        Event::Checkpoint { .. } => {
            if let Err(e) = run::read_log(&log_path)
                .map_err(anyhow::Error::from)
                .and_then(|l| write_loss_png(&l, &png_path))
            {
                plot_err.get_or_insert(e);
            }
        }
    };
    let summary = match a.stage {
        StageArg::Autoencoder => run::run_autoencoder(&opts, &mut on_event),
        StageArg::Diffusion => run::run_diffusion(
            &opts,
            a.autoencoder.as_deref().unwrap_or(Path::new("")),
            &mut on_event,
        ),
    };
    if let Some(bar) = pb.take() {
        bar.finish_and_clear();
    }
    let summary = summary.with_context(|| {
        if group.world_size() > 1 {
            format!(
                "rank {} of {}: training the {stage} in {}",
                group.rank(),
                group.world_size(),
                a.out.display()
            )
        } else {
            format!("training the {stage} in {}", a.out.display())
        }
    })?;
    if !root {
        return Ok(());
    }
    if let Some(e) = plot_err {
        eprintln!("warning: {e:#}");
    }
    let fmt = |l: Option<f32>| l.map(|v| format!("{v:.5}")).unwrap_or_else(|| "-".into());
    println!(
        "{stage}: steps {}..{} in {:.1} s, loss {} -> {}; checkpoint {}",
        summary.start_step,
        summary.end_step,
        summary.wall_s,
        fmt(summary.first_loss),
        fmt(summary.last_loss),
        summary.checkpoint.display()
    );
    Ok(())
}
