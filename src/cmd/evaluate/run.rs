//! `evaluate`'s driver: checks everything first (settings, outputs, headers, model, features,
//! memory), then runs the passes and writes the report, the JSON and the contact sheet (each
//! atomically, after every check passed).

use anyhow::{bail, Context};
use ldm_metrics::mmd::{mmd, Rows};
use ldm_metrics::pairs::{mean_std, Pairs};
use ldm_metrics::ssim::check_ms_ssim_size;
use serde_json::{json, Value};

use super::inputs::{check_headers, nifti_files};
use super::passes::{autoencoder, fid_of, pair_stats, reconstructions, summarise, VolumeSummary};
use super::report::table;
use super::settings::{block_size, check_output, settings, size};
use super::EvaluateArgs;
use crate::output::preview::sheet::{write_sheet_png, SheetRow};

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
