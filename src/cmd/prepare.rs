//! `brats-ldm prepare`: run the bundle's preprocessing on a dataset or file and write each result
//! as float32 NIfTI with its affine, printing per-file statistics; `--skip-bad` keeps going past
//! unreadable files. Before reading a file's voxels it computes, from the header and the
//! settings, the most memory the chain will hold and refuses with that byte count when it is above
//! `--max-memory` (default: half of physical memory).

use std::path::{Path, PathBuf};

use anyhow::Context;
use ldm_io::budget::{gib, parse_size, Budget};
use ldm_trainer::data::preprocess::output_bytes;
use ldm_trainer::data::{discover, preprocess_file_within, write_volume, PreprocessConfig};

#[derive(clap::Args, Debug)]
#[command(
    about = "Preprocess NIfTI volumes as the bundle does (RAS, 1.1 mm, centre crop, percentile scaling)"
)]
pub struct PrepareArgs {
    /// A Task01 folder (dataset.json), a folder of .nii/.nii.gz files, or one file.
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder (created); files keep their names.
    #[arg(long)]
    pub out: PathBuf,
    /// Channel of 4-D files (Task01: 0 = FLAIR).
    #[arg(long, default_value_t = 0)]
    pub channel: usize,
    /// Target voxel size in mm.
    #[arg(long, default_value = "1.1,1.1,1.1", value_name = "X,Y,Z")]
    pub spacing: String,
    /// Centre crop size after resampling.
    #[arg(long, default_value = "144,176,112", value_name = "X,Y,Z")]
    pub crop: String,
    /// Leave axes shorter than the crop short (MONAI CenterSpatialCrop) instead of zero-padding.
    #[arg(long)]
    pub no_pad: bool,
    /// Clip the scaled intensities to [0, 1] (the bundle does not).
    #[arg(long)]
    pub clip: bool,
    /// Warn about unreadable files (and missing dataset.json entries) and go on.
    #[arg(long)]
    pub skip_bad: bool,
    /// Most memory one volume's preprocessing may use (e.g. 4G, 512M); a file that would need
    /// more is refused before its voxels are read. Default: half of physical memory.
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
}

fn parse_spacing(s: &str) -> anyhow::Result<[f64; 3]> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let vals: Vec<f64> = match parts.len() {
        1 | 3 => parts
            .iter()
            .map(|p| {
                p.parse::<f64>()
                    .with_context(|| format!("--spacing: {p:?} is not a number"))
            })
            .collect::<anyhow::Result<_>>()?,
        _ => anyhow::bail!("--spacing must be S or X,Y,Z, got {s:?}"),
    };
    let v = if vals.len() == 1 {
        [vals[0]; 3]
    } else {
        [vals[0], vals[1], vals[2]]
    };
    if v.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
        anyhow::bail!("--spacing values must be positive, got {s:?}");
    }
    Ok(v)
}

fn output_name(src: &Path) -> String {
    let name = src.file_name().and_then(|n| n.to_str()).unwrap_or("volume");
    let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
    format!("{stem}.nii.gz")
}

pub fn run(a: PrepareArgs) -> anyhow::Result<()> {
    let cfg = PreprocessConfig {
        channel: a.channel,
        spacing: parse_spacing(&a.spacing)?,
        roi: crate::cmd::phantoms::parse_triple_usize(&a.crop, "--crop")?,
        pad_to_roi: !a.no_pad,
        scaling: ldm_trainer::data::PercentileScaling {
            clip: a.clip,
            ..Default::default()
        },
    };
    cfg.validate()?;
    let budget = match &a.max_memory {
        Some(s) => Budget::new(parse_size(s).map_err(|e| anyhow::anyhow!("--max-memory: {e}"))?),
        None => Budget::from_system(),
    };
    let out_bytes = output_bytes(&cfg);
    if out_bytes > budget.limit() as u128 {
        anyhow::bail!(
            "--crop {} needs {out_bytes} bytes ({}) for the output volume alone, above the memory limit of {} bytes ({}); raise it with --max-memory if the machine has the memory",
            a.crop,
            gib(out_bytes),
            budget.limit(),
            gib(budget.limit() as u128)
        );
    }
    let ds = discover(&a.data, a.skip_bad)?;
    for m in &ds.missing {
        eprintln!(
            "warning: skipping {}: listed in dataset.json but missing",
            m.display()
        );
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let (mut done, mut skipped) = (0usize, ds.missing.len());
    println!(
        "{:<40} {:>15} {:>8} {:>15} {:>10} {:>10} {:>8} {:>8}",
        "file", "source dims", "mm", "resampled", "p0", "p99.5", "mean", "std"
    );
    for src in &ds.images {
        let result = preprocess_file_within(src, &cfg, budget).and_then(|p| {
            let out = a.out.join(output_name(src));
            write_volume(&out, &p.volume, "brats-ldm prepare")?;
            Ok(p)
        });
        match result {
            Ok(p) => {
                let s = p.volume.stats();
                let d = |x: [usize; 3]| format!("{}x{}x{}", x[0], x[1], x[2]);
                println!(
                    "{:<40} {:>15} {:>8} {:>15} {:>10.4} {:>10.4} {:>8.4} {:>8.4}",
                    output_name(src),
                    d(p.source_dims),
                    format!("{:.2}", p.source_spacing[0]),
                    d(p.resampled_dims),
                    p.a_min,
                    p.a_max,
                    s.mean,
                    s.std
                );
                done += 1;
            }
            Err(e) if a.skip_bad => {
                eprintln!("warning: skipping: {e}");
                skipped += 1;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("preprocessing stopped (use --skip-bad to skip bad files)"))
            }
        }
    }
    println!(
        "prepared {done} volume(s) into {}, skipped {skipped}",
        a.out.display()
    );
    if done == 0 {
        anyhow::bail!("no volume could be prepared");
    }
    Ok(())
}
