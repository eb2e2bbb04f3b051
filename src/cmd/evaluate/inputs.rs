//! `evaluate`'s inputs: the NIfTI files of a folder, every header checked (one channel, one
//! shape) before any volume is read, and a volume read within the memory budget.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ldm_io::budget::Budget;
use ldm_io::nifti::{read_checked_info, read_volume_within};

/// The NIfTI files of a folder, sorted by name; a folder without any is an error.
pub(super) fn nifti_files(dir: &Path, what: &str) -> anyhow::Result<Vec<PathBuf>> {
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
pub(super) fn stem(p: &Path) -> String {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("volume");
    name.trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .to_string()
}

/// Checks every header: one channel, and every volume of `files` has `dims` (or the first
/// file's); returns the dims and the first file's voxel spacing in mm.
pub(super) fn check_headers(
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

pub(super) fn load(path: &Path, budget: Budget) -> anyhow::Result<Vec<f32>> {
    Ok(read_volume_within(path, None, budget)?.data)
}
