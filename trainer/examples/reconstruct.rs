//! Autoencoder check: encodes prepared volumes (`brats-ldm prepare` output, float32 NIfTI) with an
//! autoencoder checkpoint, decodes the posterior mean, prints the L1 error and latent statistics
//! per volume and writes each reconstruction as NIfTI into OUT_DIR.
//!
//! `cargo run --release -p ldm-trainer --example reconstruct -- RUN/ae/checkpoint.ckpt OUT_DIR a.nii.gz ...`

use std::path::Path;

use ldm_trainer::data::nifti_io::{read_volume, write_volume};
use ldm_trainer::layers::Dims;
use ldm_trainer::train::vae_gan::VaeGanTrainer;

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (m, (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ckpt, out, files @ ..] = args.as_slice() else {
        return Err("usage: reconstruct CHECKPOINT OUT_DIR VOLUME.nii[.gz]...".into());
    };
    let (t, _) = VaeGanTrainer::resume(Path::new(ckpt))?;
    let out = Path::new(out);
    std::fs::create_dir_all(out)?;
    for f in files {
        let path = Path::new(f);
        let mut v = read_volume(path, None)?;
        let [x, y, z] = v.dims;
        let (mu, sigma, ld) = t.ae.encode(&t.ae_params.data, &v.data, Dims::new(1, 1, x, y, z))?;
        let (recon, _) = t.ae.decode(&t.ae_params.data, &mu, ld)?;
        let l1 = recon.iter().zip(&v.data).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / recon.len().max(1) as f64;
        let (_, sd_mu) = mean_std(&mu);
        let max_mu = mu.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
        let (mean_sigma, _) = mean_std(&sigma);
        println!("{f}: L1 {l1:.4}, std(mu) {sd_mu:.3}, max |mu| {max_mu:.2}, mean sigma {mean_sigma:.3}");
        v.data = recon;
        let name = path.file_name().ok_or_else(|| format!("{f}: not a file name"))?;
        write_volume(&out.join(name), &v, "brats-ldm autoencoder reconstruction")?;
    }
    Ok(())
}
