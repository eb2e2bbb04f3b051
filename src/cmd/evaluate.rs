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

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use ldm_io::budget::{parse_size, Budget};
use ldm_io::nifti::{read_checked_info, read_volume_within};
use ldm_metrics::fid::fid;
use ldm_metrics::histogram::Binning;
use ldm_metrics::mmd::{mmd, Rows};
use ldm_metrics::pairs::{for_each_pair, mean_std, parallel_map, Pairs, Schedule, Side};
use ldm_metrics::ssim::{check_ms_ssim_size, ms_ssim, KernelType, SsimParams, MS_SSIM_WEIGHTS};
use ldm_metrics::Volume;
use ldm_trainer::models::autoencoder::AutoencoderKL;
use ldm_trainer::params::ParamStore;
use ldm_trainer::train::validation::{self, Reconstruction};
use serde_json::{json, Value};

use crate::output::preview::sheet::{central_slices, write_sheet_png, SheetRow};

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

fn list_of<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<Vec<T>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("{what}: {p:?} is not a number"))
        })
        .collect()
}

fn one_or_three<T: std::str::FromStr + Copy>(s: &str, what: &str) -> anyhow::Result<[T; 3]> {
    match list_of::<T>(s, what)?[..] {
        [v] => Ok([v; 3]),
        [a, b, c] => Ok([a, b, c]),
        _ => bail!("{what} must be one number or three (D,H,W), got {s:?}"),
    }
}

/// Every setting, checked.
struct Settings {
    ssim: SsimParams,
    weights: Vec<f64>,
    binning: Binning,
    threads: usize,
    budget: Budget,
}

fn settings(a: &EvaluateArgs) -> anyhow::Result<Settings> {
    let ssim = SsimParams {
        data_range: a.data_range,
        kernel_type: if a.kernel_type == "uniform" {
            KernelType::Uniform
        } else {
            KernelType::Gaussian
        },
        kernel_size: one_or_three(&a.kernel_size, "--kernel-size")?,
        kernel_sigma: one_or_three(&a.kernel_sigma, "--kernel-sigma")?,
        k1: a.k1,
        k2: a.k2,
    };
    ssim.check()
        .map_err(|e| anyhow::anyhow!("SSIM settings: {e}"))?;
    let weights = match &a.ms_ssim_weights {
        Some(s) => list_of::<f64>(s, "--ms-ssim-weights")?,
        None => MS_SSIM_WEIGHTS.to_vec(),
    };
    if weights.is_empty() || weights.iter().any(|w| !w.is_finite()) {
        bail!("--ms-ssim-weights must be finite numbers");
    }
    let range: Vec<f64> = list_of(&a.hist_range, "--hist-range")?;
    let [lo, hi] = range.as_slice() else {
        bail!("--hist-range must be LO,HI, got {:?}", a.hist_range);
    };
    let binning = Binning::new(a.hist_bins, *lo, *hi)
        .map_err(|e| anyhow::anyhow!("--hist-bins/--hist-range: {e}"))?;
    let threads = match a.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(t) => t,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let budget = match &a.max_memory {
        Some(s) => Budget::new(parse_size(s).map_err(|e| anyhow::anyhow!("--max-memory: {e}"))?),
        None => Budget::default(),
    };
    Ok(Settings {
        ssim,
        weights,
        binning,
        threads,
        budget,
    })
}

/// The NIfTI files of a folder, sorted by name; a folder without any is an error.
fn nifti_files(dir: &Path, what: &str) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("{what} {}: cannot read the folder", dir.display()))?;
    let mut files = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("{what} {}: cannot read the folder", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with('.') && (name.ends_with(".nii") || name.ends_with(".nii.gz")) {
            files.push(e.path());
        }
    }
    if files.is_empty() {
        bail!(
            "{what} {}: no .nii or .nii.gz files in the folder",
            dir.display()
        );
    }
    files.sort();
    Ok(files)
}

/// The file's name without `.nii` / `.nii.gz` (the sheet's label and the report's key).
fn stem(p: &Path) -> String {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("volume");
    name.trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .to_string()
}

/// Checks every header: one channel, and every volume of `files` has `dims` (or the first
/// file's); returns the dims and the first file's voxel spacing in mm.
fn check_headers(
    files: &[PathBuf],
    want: Option<([usize; 3], &Path)>,
) -> anyhow::Result<([usize; 3], [f64; 3])> {
    let mut reference: Option<([usize; 3], PathBuf)> = want.map(|(d, p)| (d, p.to_path_buf()));
    let mut spacing = [1.0; 3];
    for (i, f) in files.iter().enumerate() {
        let info = read_checked_info(f)?;
        if info.channels != 1 {
            bail!(
                "{}: has {} channels; evaluate compares single-channel volumes",
                f.display(),
                info.channels
            );
        }
        if i == 0 {
            spacing = [0, 1, 2].map(|c| {
                (0..3)
                    .map(|r| info.affine[r][c] * info.affine[r][c])
                    .sum::<f64>()
                    .sqrt()
            });
        }
        match &reference {
            Some((d, first)) if *d != info.dims => bail!(
                "{}: shape {:?} differs from the shape {:?} of {}; all volumes must have one shape",
                f.display(),
                info.dims,
                d,
                first.display()
            ),
            Some(_) => {}
            None => reference = Some((info.dims, f.clone())),
        }
    }
    Ok((reference.map(|r| r.0).unwrap_or([0; 3]), spacing))
}

fn load(path: &Path, budget: Budget) -> anyhow::Result<Vec<f32>> {
    Ok(read_volume_within(path, None, budget)?.data)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{what:>12} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta_precise}}]"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// What the single pass over one set keeps of each volume.
struct VolumeSummary {
    mean: f64,
    min: f32,
    max: f32,
    histogram: Vec<f32>,
    slices: Option<SheetRow>,
}

fn summarise(
    files: &[PathBuf],
    dims: [usize; 3],
    s: &Settings,
    sheet_rows: usize,
    what: &str,
) -> anyhow::Result<Vec<VolumeSummary>> {
    let b = bar(files.len() as u64, what);
    let out = parallel_map(
        files.len(),
        s.threads,
        &|i| -> anyhow::Result<VolumeSummary> {
            let v = load(&files[i], s.budget)?;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
            let (min, max) = v
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            let slices = if i < sheet_rows {
                Some(SheetRow {
                    label: stem(&files[i]),
                    panels: central_slices(dims, &v)?,
                })
            } else {
                None
            };
            Ok(VolumeSummary {
                mean,
                min,
                max,
                histogram: s.binning.histogram(&v),
                slices,
            })
        },
        &|k| b.inc(k),
    );
    b.finish_and_clear();
    out
}

/// Mean and spread of MS-SSIM and SSIM over a set of pairs.
fn pair_stats(
    what: &str,
    sets: (&[PathBuf], &[PathBuf]),
    pairs: Pairs,
    dims: [usize; 3],
    s: &Settings,
    block: usize,
) -> anyhow::Result<Value> {
    if pairs.count() == 0 {
        return Ok(Value::Null);
    }
    let shape = [1, dims[0], dims[1], dims[2]];
    let b = bar(pairs.count(), what);
    let loader = |side: Side, i: usize| -> anyhow::Result<Vec<f32>> {
        load(
            if side == Side::A {
                &sets.0[i]
            } else {
                &sets.1[i]
            },
            s.budget,
        )
    };
    let metric = |x: &Vec<f32>, y: &Vec<f32>| -> anyhow::Result<(f64, f64)> {
        let r = ms_ssim(
            &Volume::new(shape, x)?,
            &Volume::new(shape, y)?,
            &s.ssim,
            &s.weights,
        )?;
        Ok((r.ms_ssim, r.ssim))
    };
    let results = for_each_pair(
        pairs,
        Schedule {
            block,
            threads: s.threads,
        },
        &loader,
        &metric,
        &|k| b.inc(k),
    );
    b.finish_and_clear();
    let results = results?;
    let ms: Vec<f64> = results.iter().map(|r| r.value.0).collect();
    let ss: Vec<f64> = results.iter().map(|r| r.value.1).collect();
    let ((ms_mean, ms_std), (s_mean, s_std)) = (mean_std(&ms), mean_std(&ss));
    Ok(
        json!({ "pairs": results.len(), "ms_ssim_mean": ms_mean, "ms_ssim_std": ms_std, "ssim_mean": s_mean, "ssim_std": s_std }),
    )
}

/// The autoencoder of a blob with an encoder, and its parameters.
fn autoencoder(path: &Path) -> anyhow::Result<(AutoencoderKL, ParamStore)> {
    let blob =
        ldm_weights::Blob::open(path).with_context(|| format!("--model {}", path.display()))?;
    let cfg = blob.config();
    let (Some(enc), Some(dec)) = (&cfg.encoder, &cfg.decoder) else {
        bail!(
            "--model {}: the blob has no encoder, so it cannot reconstruct volumes (export it with --include-encoder)",
            path.display()
        );
    };
    let mut store = ParamStore::new();
    let ae = AutoencoderKL::new(&mut store, enc, dec)
        .with_context(|| format!("--model {}", path.display()))?;
    ldm_trainer::export::load_from_blob(&mut store, &blob)
        .with_context(|| format!("--model {}", path.display()))?;
    Ok((ae, store))
}

fn reconstructions(
    files: &[PathBuf],
    dims: [usize; 3],
    model: &(AutoencoderKL, ParamStore),
    s: &Settings,
) -> anyhow::Result<Value> {
    let b = bar(files.len() as u64, "reconstruct");
    let mut items = Vec::with_capacity(files.len());
    let mut per_file = serde_json::Map::new();
    for f in files {
        let real = load(f, s.budget)?;
        let recon = validation::reconstruct(&model.0, &model.1.data, &real, dims)
            .with_context(|| format!("{}: reconstructing", f.display()))?;
        let r = validation::compare(&real, &recon, dims, &s.ssim, Some(&s.weights))?;
        per_file.insert(stem(f), serde_json::to_value(r)?);
        items.push(r);
        b.inc(1);
    }
    b.finish_and_clear();
    let m: Option<Reconstruction> = validation::mean(&items);
    Ok(json!({ "volumes": items.len(), "mean": m, "per_volume": per_file }))
}

fn features(path: &Path) -> anyhow::Result<(usize, usize, Vec<f32>)> {
    let a = ldm_io::npy::read_f32(path)?;
    match a.shape.as_slice() {
        &[n, f] if n >= 2 && f >= 1 => Ok((n, f, a.data)),
        other => bail!(
            "{}: features must be a float32 array [N >= 2, F], got shape {other:?}",
            path.display()
        ),
    }
}

fn fid_of(real: &Path, fake: &Path) -> anyhow::Result<Value> {
    let (nr, fr, dr) = features(real)?;
    let (nf, ff, df) = features(fake)?;
    if fr != ff {
        bail!("--features-real has {fr} features per row but --features-fake has {ff}");
    }
    if dr.iter().chain(&df).any(|v| !v.is_finite()) {
        bail!(
            "{}: NaN or infinite feature values",
            if dr.iter().any(|v| !v.is_finite()) {
                real.display()
            } else {
                fake.display()
            }
        );
    }
    let value = fid(&Rows::new(nf, ff, &df)?, &Rows::new(nr, fr, &dr)?)?;
    Ok(json!({ "fid": value, "real_rows": nr, "fake_rows": nf, "features": fr }))
}

fn check_output(p: &Option<PathBuf>, flag: &str) -> anyhow::Result<()> {
    if let Some(p) = p {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            bail!(
                "{flag} {}: the folder {} does not exist",
                p.display(),
                dir.display()
            );
        }
        if p.is_dir() {
            bail!("{flag} {}: is a folder", p.display());
        }
    }
    Ok(())
}

/// Volumes per block so that two blocks plus each thread's MS-SSIM workspace fit the budget;
/// returns the block and the workspace of one thread in bytes.
fn block_size(dims: [usize; 3], kernel_d: usize, s: &Settings, n: usize) -> (usize, u64) {
    let vol = 4 * dims.iter().product::<usize>() as u64;
    // per thread: the pair's two pyramids (f32, 8/7 of a volume each), the 5 x kd in-plane
    // maps with the accumulator and two plane buffers (f64), and a little slack
    let plane = (dims[1] * dims[2]) as u64 * 8;
    let per_thread = 2 * vol * 8 / 7 + (5 * kernel_d as u64 + 7) * plane + (64 << 10);
    let free = s
        .budget
        .limit()
        .saturating_sub(per_thread * s.threads as u64);
    let block = ((free / (2 * vol.max(1))) as usize).clamp(1, n.max(1));
    (block, per_thread)
}

/// Bytes in the largest binary unit that keeps the number at least 1.
fn size(bytes: u128) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

fn fmt(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_f64)
        .map(|x| format!("{x:.4}"))
        .unwrap_or_else(|| "-".into())
}

fn table(report: &Value) -> String {
    let mut t = String::new();
    let line = |t: &mut String, s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    let s = &report["samples"];
    line(
        &mut t,
        format!(
            "samples: {} volumes of {} in {}",
            s["count"],
            s["shape"],
            s["dir"].as_str().unwrap_or("")
        ),
    );
    if let Some(r) = report["real"].as_object() {
        line(
            &mut t,
            format!(
                "real:    {} volumes in {}",
                r["count"],
                r["dir"].as_str().unwrap_or("")
            ),
        );
    }
    let p = &report["settings"];
    line(
        &mut t,
        format!(
            "window:  {} kernel {} sigma {}, data range {}, k1 {}, k2 {}; MS-SSIM weights {}",
            p["kernel_type"].as_str().unwrap_or(""),
            p["kernel_size"],
            p["kernel_sigma"],
            p["data_range"],
            p["k1"],
            p["k2"],
            p["ms_ssim_weights"]
        ),
    );
    line(&mut t, String::new());
    line(
        &mut t,
        format!(
            "{:<28} {:>8} {:>9} {:>8} {:>9} {:>8}",
            "pairs", "count", "MS-SSIM", "+/-", "SSIM", "+/-"
        ),
    );
    for (key, name) in [
        ("sample_diversity", "sample-sample (diversity)"),
        ("real_diversity", "real-real (reference)"),
        ("real_vs_sample", "real-sample"),
    ] {
        let v = &report[key];
        if v.is_object() {
            line(
                &mut t,
                format!(
                    "{:<28} {:>8} {:>9} {:>8} {:>9} {:>8}",
                    name,
                    v["pairs"].as_u64().unwrap_or(0),
                    fmt(v, "ms_ssim_mean"),
                    fmt(v, "ms_ssim_std"),
                    fmt(v, "ssim_mean"),
                    fmt(v, "ssim_std")
                ),
            );
        }
    }
    if let Some(m) = report["mmd_histogram"].as_f64() {
        line(
            &mut t,
            format!("MMD of intensity histograms (real vs samples): {m:.6}"),
        );
    }
    if report["reconstruction"].is_object() {
        let m = &report["reconstruction"]["mean"];
        line(
            &mut t,
            format!(
                "reconstruction of {} real volumes: SSIM {}  MS-SSIM {}  PSNR {} dB  L1 {}",
                report["reconstruction"]["volumes"],
                fmt(m, "ssim"),
                fmt(m, "ms_ssim"),
                fmt(m, "psnr"),
                fmt(m, "l1")
            ),
        );
    }
    if let Some(f) = report["fid"].as_object() {
        line(
            &mut t,
            format!(
                "FID of the given features ({} real, {} fake, {} features): {:.4}",
                f["real_rows"],
                f["fake_rows"],
                f["features"],
                f["fid"].as_f64().unwrap_or(f64::NAN)
            ),
        );
    }
    let i = &report["intensity"];
    line(
        &mut t,
        format!(
            "intensity mean: samples {}{}",
            fmt(i, "samples_mean"),
            if i["real_mean"].is_number() {
                format!(", real {}", fmt(i, "real_mean"))
            } else {
                String::new()
            }
        ),
    );
    line(
        &mut t,
        format!("memory: {}", report["memory"].as_str().unwrap_or("")),
    );
    t
}

pub fn run(a: EvaluateArgs) -> anyhow::Result<()> {
    let s = settings(&a)?;
    check_output(&a.json, "--json")?;
    check_output(&a.sheet, "--sheet")?;
    if a.sheet.is_some() && a.sheet_max == 0 {
        bail!("--sheet-max must be at least 1");
    }
    if a.model.is_some() && a.real.is_none() {
        bail!("--model needs --real: reconstructions are measured on real volumes");
    }
    if a.features_real.is_some() != a.features_fake.is_some() {
        bail!("FID needs both --features-real and --features-fake");
    }
    let samples = nifti_files(&a.samples, "SAMPLES")?;
    let real = a
        .real
        .as_deref()
        .map(|d| nifti_files(d, "--real"))
        .transpose()?;
    let (dims, spacing) = check_headers(&samples, None)?;
    if let Some(r) = &real {
        check_headers(r, Some((dims, &samples[0])))?;
    }
    check_ms_ssim_size(dims, &s.ssim, &s.weights).map_err(|e| {
        anyhow::anyhow!("MS-SSIM of {dims:?} volumes: {e} (pass a smaller --kernel-size or fewer --ms-ssim-weights)")
    })?;
    let fid = match (&a.features_real, &a.features_fake) {
        (Some(r), Some(f)) => Some(fid_of(r, f)?),
        _ => None,
    };
    let model = a.model.as_deref().map(autoencoder).transpose()?;
    if let Some(m) = &model {
        m.0.check_image(ldm_trainer::layers::Dims::new(
            1, 1, dims[0], dims[1], dims[2],
        ))
        .context("--model")?;
    }

    let voxels = dims.iter().product::<usize>();
    let n_max = samples.len().max(real.as_ref().map_or(0, Vec::len));
    let (block, per_thread) = block_size(dims, s.ssim.kernel_size[0], &s, n_max);
    let vol_bytes = 4 * voxels as u128;
    s.budget
        .check(2 * vol_bytes + per_thread as u128, "comparing two volumes")
        .map_err(|e| anyhow::anyhow!("--max-memory: {e}"))?;
    let memory = format!(
        "up to {} volumes of {} held at once, plus {} per thread x {} threads",
        2 * block.min(n_max),
        size(vol_bytes),
        size(per_thread as u128),
        s.threads
    );

    let sheet_rows = if a.sheet.is_some() { a.sheet_max } else { 0 };
    let sample_summary = summarise(&samples, dims, &s, sheet_rows, "read samples")?;
    let real_summary = match &real {
        Some(r) => Some(summarise(r, dims, &s, 0, "read real")?),
        None => None,
    };
    let sample_diversity = pair_stats(
        "diversity",
        (&samples, &samples),
        Pairs::Within(samples.len()),
        dims,
        &s,
        block,
    )?;
    let (real_diversity, real_vs_sample) = match &real {
        Some(r) => (
            pair_stats(
                "real pairs",
                (r, r),
                Pairs::Within(r.len()),
                dims,
                &s,
                block,
            )?,
            pair_stats(
                "real-sample",
                (r, &samples),
                Pairs::Across(r.len(), samples.len()),
                dims,
                &s,
                block,
            )?,
        ),
        None => (Value::Null, Value::Null),
    };
    let hist_rows = |v: &[VolumeSummary]| -> Vec<f32> {
        v.iter().flat_map(|x| x.histogram.iter().copied()).collect()
    };
    let mmd_histogram = match &real_summary {
        Some(r) if r.len() >= 2 && sample_summary.len() >= 2 => {
            let (hr, hs) = (hist_rows(r), hist_rows(&sample_summary));
            json!(mmd(
                &Rows::new(r.len(), s.binning.bins, &hr)?,
                &Rows::new(sample_summary.len(), s.binning.bins, &hs)?
            )?)
        }
        _ => Value::Null,
    };
    let reconstruction = match (&model, &real) {
        (Some(m), Some(r)) => reconstructions(r, dims, m, &s)?,
        _ => Value::Null,
    };
    let set_mean = |v: &[VolumeSummary]| mean_std(&v.iter().map(|x| x.mean).collect::<Vec<_>>()).0;
    let set_range = |v: &[VolumeSummary]| {
        json!([
            v.iter().map(|x| x.min).fold(f32::INFINITY, f32::min),
            v.iter().map(|x| x.max).fold(f32::NEG_INFINITY, f32::max)
        ])
    };
    let report = json!({
        "samples": { "dir": a.samples.display().to_string(), "count": samples.len(), "shape": dims, "spacing_mm": spacing },
        "real": real.as_ref().map(|r| json!({ "dir": a.real.as_ref().map(|d| d.display().to_string()), "count": r.len() })),
        "settings": {
            "kernel_type": a.kernel_type, "kernel_size": s.ssim.kernel_size, "kernel_sigma": s.ssim.kernel_sigma,
            "data_range": s.ssim.data_range, "k1": s.ssim.k1, "k2": s.ssim.k2, "ms_ssim_weights": s.weights,
            "hist_bins": s.binning.bins, "hist_range": [s.binning.lo, s.binning.hi],
        },
        "sample_diversity": sample_diversity,
        "real_diversity": real_diversity,
        "real_vs_sample": real_vs_sample,
        "mmd_histogram": mmd_histogram,
        "reconstruction": reconstruction,
        "fid": fid,
        "memory": memory,
        "intensity": {
            "samples_mean": set_mean(&sample_summary), "samples_range": set_range(&sample_summary),
            "real_mean": real_summary.as_deref().map(set_mean), "real_range": real_summary.as_deref().map(set_range),
        },
    });
    let rows: Vec<SheetRow> = sample_summary
        .into_iter()
        .filter_map(|v| v.slices)
        .collect();
    let sheet_png = match &a.sheet {
        Some(_) => {
            let mut bytes = Vec::new();
            write_sheet_png(&mut bytes, spacing, &rows).context("--sheet")?;
            Some(bytes)
        }
        None => None,
    };
    print!("{}", table(&report));
    if let Some(p) = &a.json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        ldm_io::atomic::write_bytes(p, text.as_bytes())
            .with_context(|| format!("--json {}", p.display()))?;
    }
    if let (Some(p), Some(bytes)) = (&a.sheet, sheet_png) {
        ldm_io::atomic::write_bytes(p, &bytes)
            .with_context(|| format!("--sheet {}", p.display()))?;
        println!("contact sheet: {} ({} volumes)", p.display(), rows.len());
    }
    Ok(())
}
