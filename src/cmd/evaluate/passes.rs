//! `evaluate`'s passes over the volumes, each with its progress bar: one read of every volume
//! (intensity summary, histogram, sheet slices), MS-SSIM/SSIM over pairs in blocks, the
//! autoencoder's reconstructions, and FID of given feature vectors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use ldm_metrics::fid::fid;
use ldm_metrics::mmd::Rows;
use ldm_metrics::pairs::{for_each_pair, mean_std, parallel_map, Pairs, Schedule, Side};
use ldm_metrics::ssim::ms_ssim;
use ldm_metrics::Volume;
use ldm_trainer::models::autoencoder::AutoencoderKL;
use ldm_trainer::params::ParamStore;
use ldm_trainer::train::validation::{self, Reconstruction};
use serde_json::{json, Value};

use super::inputs::{load, stem};
use super::settings::Settings;
use crate::output::preview::sheet::{central_slices, SheetRow};

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
pub(super) struct VolumeSummary {
    pub(super) mean: f64,
    pub(super) min: f32,
    pub(super) max: f32,
    pub(super) histogram: Vec<f32>,
    pub(super) slices: Option<SheetRow>,
}

pub(super) fn summarise(
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
pub(super) fn pair_stats(
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
pub(super) fn autoencoder(path: &Path) -> anyhow::Result<(AutoencoderKL, ParamStore)> {
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

pub(super) fn reconstructions(
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

pub(super) fn fid_of(real: &Path, fake: &Path) -> anyhow::Result<Value> {
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
