//! `brats-ldm generate`: make N synthetic volumes from a model blob, reproducibly, as files a
//! neuroimaging tool opens (NIfTI-1 with the model's geometry), with safe batch semantics for job
//! arrays and runs sharing a folder: per-volume claim files (one run makes each volume), files
//! written by temp + rename, complete outputs (gzip CRC checked) skipped on rerun, seed ranges split
//! by `--shard I/N`, a JSON-lines manifest with one line per volume, a volume with non-finite
//! values refused, the plan's memory printed and checked before it is allocated, optional PNG
//! previews and progress bars.
//!
//! This file holds the command's arguments; each job has its file: `settings` (the arguments
//! checked before any model load), `model` (finding and opening the blob), `plan` (planning,
//! memory check, allocation), `init_noise` (the `--init-noise` file), `jobs` (the volumes to
//! make), `batch` (claims, resume and the manifest), `produce` (one volume made and written),
//! `progress` (bars and log lines) and `run` (the whole command). `bench` shares the model, plan
//! and latent-shape helpers re-exported here.

mod batch;
mod init_noise;
mod jobs;
mod model;
mod plan;
mod produce;
mod progress;
mod run;
mod settings;

pub use model::{open_model, resolve_model};
pub use plan::plan_and_allocate;
pub use run::run;
pub use settings::parse_latent_shape;

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(about = "Generate synthetic volumes (NIfTI-1 .nii.gz by default) from a model blob")]
pub struct Args {
    /// Model blob. Default: $BRATS_LDM_MODEL, else the shipped weights/default/brats-ldm-default.blob
    /// found beside the executable or in the source tree.
    #[arg(long, value_name = "BLOB")]
    pub model: Option<PathBuf>,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of volumes in the whole batch: seeds SEED..SEED+COUNT-1.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// First seed of the batch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling steps (default: the model's, 50 for the bundle).
    #[arg(long)]
    pub steps: Option<usize>,
    /// ddim, ddpm or pndm (default: the model's), with the model's scheduler options.
    #[arg(long, value_name = "ddim|ddpm|pndm")]
    pub sampler: Option<String>,
    /// DDIM eta: 0 is deterministic given the initial noise (default 0).
    #[arg(long)]
    pub eta: Option<f32>,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16 (reduced precision needs a CUDA device).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Worker threads (default: all available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// nii.gz, nii or npy.
    #[arg(long, default_value = "nii.gz")]
    pub format: String,
    /// Also write a PNG of the three central slices next to each volume.
    #[arg(long)]
    pub preview: bool,
    /// Generate only shard I of N (0-based) of the seed range, for job arrays.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Latent shape C,D,H,W (default: the model's; spatial sizes must divide by the UNet's
    /// downsampling factor).
    #[arg(long, value_name = "C,D,H,W")]
    pub latent_shape: Option<String>,
    /// Start from this initial latent (float32 .npy, [C,D,H,W] or [1,C,D,H,W]) instead of seeded
    /// noise; the latent shape comes from the file. A stochastic sampler (DDPM, DDIM with
    /// eta > 0) draws its step noise from --seed, as the run of that seed does.
    #[arg(long, value_name = "FILE.npy")]
    pub init_noise: Option<PathBuf>,
    /// Bound in bytes for the arena, workspaces and sampler state (weights excluded), e.g. 2GiB:
    /// the CPU decoder then works in depth slabs to fit (same result within 1e-6).
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    /// No plan line and no per-volume log lines when stderr is not a terminal.
    #[arg(long)]
    pub quiet: bool,
}
