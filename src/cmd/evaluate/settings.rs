//! `evaluate`'s settings: the metric options parsed and checked, the output paths checked before
//! any work, and the memory plan (volumes per block of the pair passes).

use std::path::{Path, PathBuf};

use anyhow::bail;
use ldm_io::budget::{parse_size, Budget};
use ldm_metrics::histogram::Binning;
use ldm_metrics::ssim::{KernelType, SsimParams, MS_SSIM_WEIGHTS};

use super::EvaluateArgs;

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
pub(super) struct Settings {
    pub(super) ssim: SsimParams,
    pub(super) weights: Vec<f64>,
    pub(super) binning: Binning,
    pub(super) threads: usize,
    pub(super) budget: Budget,
}

pub(super) fn settings(a: &EvaluateArgs) -> anyhow::Result<Settings> {
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

pub(super) fn check_output(p: &Option<PathBuf>, flag: &str) -> anyhow::Result<()> {
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
pub(super) fn block_size(dims: [usize; 3], kernel_d: usize, s: &Settings, n: usize) -> (usize, u64) {
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
pub(super) fn size(bytes: u128) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}
