//! `brats-ldm evaluate`: quality and diversity of generated volumes the way MONAI's generative
//! work measures them, over a folder of generated NIfTI volumes and optionally a folder of real
//! (prepared) volumes and a model with an encoder. The metrics are ldm-metrics' (MONAI 1.5's
//! SSIMMetric, MultiScaleSSIMMetric, PSNRMetric, MAEMetric, MMDMetric, FIDMetric); this module
//! finds and checks the files, plans memory, runs the passes with a progress bar, and writes the
//! table, the JSON report and the contact sheet (both atomically, after every check passed).
//!
//! Passes: (1) every header (shapes must agree; nothing is read before this passes); (2) every
//! volume once: intensity statistics and histogram, central slices for the sheet; (3) pairs:
//! MS-SSIM and SSIM of every sample pair (diversity), every real pair (the data's own
//! diversity, for reference) and every real-sample pair, two blocks of volumes in memory at a
//! time; (4) with `--model`, each real volume encoded to its posterior mean and decoded.
//!
//! Files: `settings.rs` (options, output paths, memory plan), `inputs.rs` (files and headers),
//! `passes.rs` (the passes), `report.rs` (the printed table), `run.rs` (the driver).

mod inputs;
mod passes;
mod report;
mod run;
mod settings;

use std::path::PathBuf;

pub use run::run;

/// The subcommand's `--help` text (set where it is registered, in main.rs).
pub const LONG_ABOUT: &str = "Measure generated volumes as MONAI 1.5's metrics do: MS-SSIM and SSIM over every pair of \
samples (diversity), of real volumes, and of real-sample pairs; MMD (linear kernel, unbiased) of intensity \
histograms; with --model, the autoencoder's reconstruction SSIM, MS-SSIM, PSNR and L1 on the real volumes; and \
FID of feature vectors given as .npy files. No pretrained feature network ships with brats-ldm: FID needs \
features extracted elsewhere (e.g. MedicalNet for 3-D), and its value depends entirely on that network. \
See docs/evaluate.md.";

#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// Folder of generated volumes (.nii / .nii.gz, one channel, one shape; other files are ignored).
    #[arg(value_name = "SAMPLES")]
    pub samples: PathBuf,
    /// Folder of real volumes of the samples' shape (e.g. `brats-ldm prepare` output).
    #[arg(long, value_name = "DIR")]
    pub real: Option<PathBuf>,
    /// Model blob with an encoder (`export --include-encoder`): reconstruction metrics of the
    /// --real volumes.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a contact sheet PNG: the three central slices of each sample, labelled.
    #[arg(long, value_name = "FILE")]
    pub sheet: Option<PathBuf>,
    /// Samples on the contact sheet (the first N by file name).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub sheet_max: usize,
    /// SSIM window size, one for all axes or D,H,W (MONAI default 11).
    #[arg(long, default_value = "11", value_name = "K|KD,KH,KW")]
    pub kernel_size: String,
    /// Gaussian window sigma, one or D,H,W (MONAI default 1.5).
    #[arg(long, default_value = "1.5", value_name = "S|SD,SH,SW")]
    pub kernel_sigma: String,
    /// Window shape.
    #[arg(long, default_value = "gaussian", value_parser = ["gaussian", "uniform"])]
    pub kernel_type: String,
    /// Intensity range L of the constants c1 = (k1 L)^2, c2 = (k2 L)^2 and PSNR's peak.
    #[arg(long, default_value_t = 1.0)]
    pub data_range: f64,
    #[arg(long, default_value_t = 0.01)]
    pub k1: f64,
    #[arg(long, default_value_t = 0.03)]
    pub k2: f64,
    /// MS-SSIM scale weights (MONAI default 0.0448,0.2856,0.3001,0.2363,0.1333); fewer weights
    /// allow smaller volumes: every extent // (len-1)^2 must exceed kernel size - 1.
    #[arg(long, value_name = "W1,W2,...")]
    pub ms_ssim_weights: Option<String>,
    /// Histogram bins for MMD.
    #[arg(long, default_value_t = 64)]
    pub hist_bins: usize,
    /// Histogram range (values outside go to the end bins).
    #[arg(long, default_value = "0,1", value_name = "LO,HI")]
    pub hist_range: String,
    /// Feature vectors of real volumes, float32 .npy [N, F], from a feature network of your
    /// choice (none ships); with --features-fake gives FID.
    #[arg(long, value_name = "FILE")]
    pub features_real: Option<PathBuf>,
    /// Feature vectors of generated volumes, float32 .npy [N, F].
    #[arg(long, value_name = "FILE")]
    pub features_fake: Option<PathBuf>,
    /// Worker threads (default: all available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Memory for volumes held at once (e.g. 4G); default: half of physical memory.
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
}
