//! `brats-ldm phantoms`: write a Task01-shaped dataset of procedural FLAIR-like brain phantoms.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use ldm_trainer::data::phantom::{write_phantom_dataset, PhantomOptions};

#[derive(clap::Args, Debug)]
#[command(
    about = "Write a Task01-shaped dataset (dataset.json, imagesTr/*.nii.gz, 4 channels, FLAIR first) of brain phantoms"
)]
pub struct PhantomsArgs {
    /// Output folder (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of volumes.
    #[arg(long, default_value_t = 4)]
    pub count: usize,
    /// Seed; the same seed always gives the same dataset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Volume shape X,Y,Z (BraTS: 240,240,155).
    #[arg(long, default_value = "240,240,155", value_name = "X,Y,Z")]
    pub size: String,
    /// Voxel size in mm.
    #[arg(long, default_value_t = 1.0)]
    pub spacing: f64,
    /// Do not write labelsTr/.
    #[arg(long)]
    pub no_labels: bool,
    /// Phantoms without a lesion.
    #[arg(long)]
    pub no_lesion: bool,
}

/// Parse "X,Y,Z" into three positive integers.
pub fn parse_triple_usize(s: &str, what: &str) -> anyhow::Result<[usize; 3]> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        anyhow::bail!("{what} must be X,Y,Z (three numbers), got {s:?}");
    }
    let mut out = [0usize; 3];
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = p
            .parse()
            .with_context(|| format!("{what}: {p:?} is not a whole number"))?;
        if *o == 0 {
            anyhow::bail!("{what}: sizes must be positive, got {s:?}");
        }
    }
    Ok(out)
}

pub fn run(a: PhantomsArgs) -> anyhow::Result<()> {
    let dims = parse_triple_usize(&a.size, "--size")?;
    let opt = PhantomOptions {
        dims,
        spacing: a.spacing,
        lesion: !a.no_lesion,
    };
    let start = Instant::now();
    let mut last = Instant::now();
    write_phantom_dataset(&a.out, a.count, a.seed, &opt, !a.no_labels, |i, path| {
        eprintln!(
            "[{}/{}] {} ({:.1} s)",
            i + 1,
            a.count,
            path.display(),
            last.elapsed().as_secs_f64()
        );
        last = Instant::now();
    })
    .with_context(|| format!("writing phantoms to {}", a.out.display()))?;
    println!(
        "wrote {} phantom(s) to {} in {:.1} s",
        a.count,
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
