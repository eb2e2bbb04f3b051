//! Sample check: compares generated volumes with the prepared training volumes they should
//! resemble. Per volume it prints the head volume (voxels above 0.15), the median intensity
//! inside the head, and the L1 distance to the nearest training volume; a sample "looks like the
//! training data" when its head volume lies inside the training range widened by 10% and its
//! nearest-volume L1 is no larger than the largest nearest-neighbour L1 among training volumes.
//! (An L1 near the autoencoder's reconstruction error would mean a copy of a training volume: it
//! is printed, not judged.)
//!
//! `cargo run --release -p ldm-trainer --example sample_stats -- PREPARED_DIR SAMPLE.nii.gz ...`
//! (PREPARED_DIR: `brats-ldm prepare` output with the generator's spacing and crop.)

use std::path::Path;

use ldm_trainer::data::dataset::discover;
use ldm_trainer::data::nifti_io::read_volume;

const HEAD_THRESHOLD: f32 = 0.15;

struct Stats {
    head_voxels: usize,
    head_median: f32,
}

fn stats(v: &[f32]) -> Stats {
    let mut head: Vec<f32> = v.iter().copied().filter(|&x| x > HEAD_THRESHOLD).collect();
    head.sort_by(f32::total_cmp);
    Stats { head_voxels: head.len(), head_median: head.get(head.len() / 2).copied().unwrap_or(0.0) }
}

fn mean_l1(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum::<f64>() / a.len().max(1) as f64
}

/// Index and L1 of the training volume nearest to `v`, skipping index `skip`.
fn nearest(train: &[Vec<f32>], v: &[f32], skip: Option<usize>) -> (usize, f64) {
    train.iter().enumerate().filter(|(i, _)| Some(*i) != skip).map(|(i, t)| (i, mean_l1(t, v))).fold((0, f64::INFINITY), |b, c| {
        if c.1 < b.1 {
            c
        } else {
            b
        }
    })
}

fn main() {
    if let Err(e) = run() {
        eprintln!("sample_stats: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [train_dir, samples @ ..] = args.as_slice() else {
        return Err("usage: sample_stats PREPARED_DIR SAMPLE.nii[.gz]...".into());
    };
    let train_files = discover(Path::new(train_dir), false)?.images;
    if train_files.len() < 2 {
        return Err(format!("{train_dir}: needs at least two prepared volumes").into());
    }
    let train = train_files.iter().map(|f| read_volume(f, None)).collect::<Result<Vec<_>, _>>()?;
    let dims = train[0].dims;
    if let Some((f, v)) = train_files.iter().zip(&train).find(|(_, v)| v.dims != dims) {
        return Err(format!("{}: dims {:?}, the first training volume has {dims:?}", f.display(), v.dims).into());
    }
    let train: Vec<Vec<f32>> = train.into_iter().map(|v| v.data).collect();
    let train_stats: Vec<Stats> = train.iter().map(|v| stats(v)).collect();
    let lo = train_stats.iter().map(|s| s.head_voxels).min().unwrap_or(0);
    let hi = train_stats.iter().map(|s| s.head_voxels).max().unwrap_or(0);
    let (lo_ok, hi_ok) = (lo as f64 * 0.9, hi as f64 * 1.1);
    let nn_train: Vec<f64> = (0..train.len()).map(|i| nearest(&train, &train[i], Some(i)).1).collect();
    let nn_max = nn_train.iter().copied().fold(0.0, f64::max);
    let mut sorted = nn_train.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "training: {} volumes {dims:?}, head voxels {lo}..{hi} (accepted {lo_ok:.0}..{hi_ok:.0}), nearest-other L1 {:.4}..{nn_max:.4} (median {:.4})",
        train.len(),
        sorted[0],
        sorted[sorted.len() / 2]
    );
    let mut alike = 0;
    for f in samples {
        let v = read_volume(Path::new(f), None)?;
        if v.dims != dims {
            return Err(format!("{f}: dims {:?}, the training volumes have {dims:?}", v.dims).into());
        }
        let s = stats(&v.data);
        let (i, l1) = nearest(&train, &v.data, None);
        let ok = (lo_ok..=hi_ok).contains(&(s.head_voxels as f64)) && l1 <= nn_max;
        alike += ok as usize;
        let name = train_files[i].file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        println!(
            "{f}: head voxels {}, median in head {:.3}, nearest training {name} L1 {l1:.4} -> {}",
            s.head_voxels,
            s.head_median,
            if ok { "like the training data" } else { "outlier" }
        );
    }
    println!("{alike} of {} samples look like the training data", samples.len());
    Ok(())
}
