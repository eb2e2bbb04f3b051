//! Validation metrics of a model being trained, and of a finished one (`brats-ldm evaluate
//! --model`): reconstruction quality of the autoencoder on held-out volumes (each encoded to its
//! posterior mean and decoded; SSIM, PSNR and L1 as MONAI's `SSIMMetric`, `PSNRMetric`,
//! `MAEMetric` compute them, via ldm-metrics), and the diversity of diffusion samples (mean
//! MS-SSIM over every pair of a few samples drawn with the runtime from the current weights).

use ldm_metrics::pairs::mean_std;
use ldm_metrics::regression::{mae, psnr};
use ldm_metrics::ssim::{ms_ssim, ssim, SsimParams};
use ldm_metrics::Volume;
use ldm_runtime::{Options, Runtime, Sampler};
use serde::Serialize;

use super::TrainError;
use crate::layers::Dims;
use crate::models::autoencoder::AutoencoderKL;

/// Reconstruction metrics of one volume (or their means over several).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reconstruction {
    pub ssim: f64,
    pub psnr: f64,
    pub l1: f64,
    /// Present when the volume is large enough for the MS-SSIM window and scales asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms_ssim: Option<f64>,
}

/// The autoencoder's reconstruction of one `[D, H, W]` volume through its posterior mean.
pub fn reconstruct(
    ae: &AutoencoderKL,
    params: &[f32],
    volume: &[f32],
    dims: [usize; 3],
) -> Result<Vec<f32>, TrainError> {
    let [d, h, w] = dims;
    let (mu, _, ld) = ae.encode(params, volume, Dims::new(1, 1, d, h, w))?;
    let (y, yd) = ae.decode(params, &mu, ld)?;
    if yd.as_array() != [1, 1, d, h, w] {
        return Err(TrainError::Invalid(format!(
            "the decoder returned shape {:?} for an input of {:?}",
            yd.as_array(),
            [1, 1, d, h, w]
        )));
    }
    Ok(y)
}

/// SSIM, PSNR (peak = `params.data_range`) and L1 of `recon` against `real` (both `[D, H, W]`),
/// plus MS-SSIM with `ms_weights` when given.
pub fn compare(
    real: &[f32],
    recon: &[f32],
    dims: [usize; 3],
    params: &SsimParams,
    ms_weights: Option<&[f64]>,
) -> Result<Reconstruction, TrainError> {
    let shape = [1, dims[0], dims[1], dims[2]];
    let (x, y) = (Volume::new(shape, recon)?, Volume::new(shape, real)?);
    let ms = match ms_weights {
        Some(wts) => Some(ms_ssim(&x, &y, params, wts)?.ms_ssim),
        None => None,
    };
    Ok(Reconstruction {
        ssim: ssim(&x, &y, params)?,
        psnr: psnr(&x, &y, params.data_range)?,
        l1: mae(&x, &y)?,
        ms_ssim: ms,
    })
}

/// Means of several volumes' metrics (MONAI's `reduction="mean"`).
pub fn mean(items: &[Reconstruction]) -> Option<Reconstruction> {
    if items.is_empty() {
        return None;
    }
    let avg =
        |f: &dyn Fn(&Reconstruction) -> f64| mean_std(&items.iter().map(f).collect::<Vec<_>>()).0;
    let ms = items
        .iter()
        .map(|r| r.ms_ssim)
        .collect::<Option<Vec<f64>>>()
        .map(|v| mean_std(&v).0);
    Some(Reconstruction {
        ssim: avg(&|r| r.ssim),
        psnr: avg(&|r| r.psnr),
        l1: avg(&|r| r.l1),
        ms_ssim: ms,
    })
}

/// Sample diversity: mean and standard deviation of MS-SSIM (or of SSIM where the volume is
/// too small for the scales) over every pair of `count` samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diversity {
    pub samples: usize,
    pub pairs: usize,
    /// "ms_ssim" or "ssim".
    pub metric: &'static str,
    pub mean: f64,
    pub std: f64,
}

/// Draws `count` samples (seeds 0..count, DDIM with `steps` steps) from a blob held in memory and
/// measures their pairwise similarity; lower means more diverse.
pub fn sample_diversity(
    blob: &ldm_weights::Blob,
    count: usize,
    steps: usize,
    threads: Option<usize>,
    params: &SsimParams,
    ms_weights: &[f64],
) -> Result<Diversity, TrainError> {
    if count < 2 {
        return Err(TrainError::Invalid(
            "sample diversity needs at least two samples".into(),
        ));
    }
    let opts = Options {
        steps: Some(steps),
        sampler: Some(Sampler::Ddim { eta: 0.0 }),
        threads,
        ..Options::default()
    };
    let mut rt = Runtime::new(blob, opts)
        .map_err(|e| TrainError::Invalid(format!("sampling for the diversity check: {e}")))?;
    let shape = rt.output_shape();
    let n: usize = shape.iter().product();
    let mut samples = Vec::with_capacity(count);
    for seed in 0..count as u64 {
        let mut out = vec![0.0f32; n];
        rt.generate(seed, &mut out, &mut |_| {})
            .map_err(|e| TrainError::Invalid(format!("sampling for the diversity check: {e}")))?;
        samples.push(out);
    }
    let spatial = [shape[1], shape[2], shape[3]];
    let use_ms = ldm_metrics::ssim::check_ms_ssim_size(spatial, params, ms_weights).is_ok();
    let mut values = Vec::new();
    for i in 0..count {
        for j in i + 1..count {
            let (a, b) = (
                Volume::new(shape, &samples[i])?,
                Volume::new(shape, &samples[j])?,
            );
            values.push(if use_ms {
                ms_ssim(&a, &b, params, ms_weights)?.ms_ssim
            } else {
                ssim(&a, &b, params)?
            });
        }
    }
    let (mean, std) = mean_std(&values);
    Ok(Diversity {
        samples: count,
        pairs: values.len(),
        metric: if use_ms { "ms_ssim" } else { "ssim" },
        mean,
        std,
    })
}
