//! Dataset discovery — a Decathlon Task01 folder (`dataset.json` with its `training` list), a
//! folder of NIfTI files (or its `imagesTr/`), or a single file — and the deterministic,
//! recorded train/validation split.

use std::path::{Path, PathBuf};

use super::error::{DataError, Result};
use super::rng::SplitMix64;

/// Where the images were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// `dataset.json` listed them (Medical Segmentation Decathlon layout).
    Decathlon,
    /// Every .nii/.nii.gz file in a folder.
    Folder,
    /// One file.
    File,
}

/// The images of a dataset, sorted, absolute or relative as given.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub kind: DatasetKind,
    pub images: Vec<PathBuf>,
    /// Files that `dataset.json` lists but that do not exist (only with `allow_missing`).
    pub missing: Vec<PathBuf>,
}

fn is_nifti_name(name: &str) -> bool {
    // "._x.nii.gz" are macOS resource forks that ship inside the Task01 archive
    !name.starts_with('.') && (name.ends_with(".nii") || name.ends_with(".nii.gz"))
}

fn list_nifti(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_nifti_name(name) && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Find the images under `path`. A `dataset.json` listing a missing file is an error naming
/// both, unless `allow_missing`, when the file is recorded in `missing` and left out.
pub fn discover(path: &Path, allow_missing: bool) -> Result<Dataset> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_file() {
        return Ok(Dataset {
            root: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            kind: DatasetKind::File,
            images: vec![path.to_path_buf()],
            missing: vec![],
        });
    }
    let dj = path.join("dataset.json");
    if dj.is_file() {
        let text = std::fs::read_to_string(&dj).map_err(|e| DataError::io(&dj, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| DataError::BadDataset {
            path: dj.clone(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let list = json
            .get("training")
            .and_then(|t| t.as_array())
            .ok_or_else(|| DataError::BadDataset {
                path: dj.clone(),
                reason: "no \"training\" list".into(),
            })?;
        let mut images = Vec::with_capacity(list.len());
        let mut missing = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let rel = item
                .as_str()
                .or_else(|| item.get("image").and_then(|v| v.as_str()))
                .ok_or_else(|| DataError::BadDataset {
                    path: dj.clone(),
                    reason: format!("training[{i}] has no \"image\" path"),
                })?;
            let rel_path = Path::new(rel);
            if rel_path.is_absolute()
                || rel_path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(DataError::BadDataset {
                    path: dj.clone(),
                    reason: format!("training[{i}] path {rel:?} leaves the dataset folder"),
                });
            }
            let full = path.join(rel_path);
            if full.is_file() {
                images.push(full);
            } else if allow_missing {
                missing.push(full);
            } else {
                return Err(DataError::MissingFile {
                    path: dj.clone(),
                    missing: full,
                });
            }
        }
        if images.is_empty() {
            return Err(DataError::BadDataset {
                path: dj,
                reason: "the training list names no existing image".into(),
            });
        }
        return Ok(Dataset {
            root: path.to_path_buf(),
            kind: DatasetKind::Decathlon,
            images,
            missing,
        });
    }
    let mut images = list_nifti(path)?;
    if images.is_empty() && path.join("imagesTr").is_dir() {
        images = list_nifti(&path.join("imagesTr"))?;
    }
    if images.is_empty() {
        return Err(DataError::BadDataset {
            path: path.to_path_buf(),
            reason: "no dataset.json and no .nii/.nii.gz files".into(),
        });
    }
    Ok(Dataset {
        root: path.to_path_buf(),
        kind: DatasetKind::Folder,
        images,
        missing: vec![],
    })
}

/// A train/validation split: a seeded shuffle of the sorted image list.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    pub seed: u64,
    pub val_fraction: f64,
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
}

/// Split `images` deterministically: sort, shuffle with `seed`, the first round(n * fraction)
/// go to validation (at least one when fraction > 0 and n > 1, never all).
pub fn split(images: &[PathBuf], val_fraction: f64, seed: u64) -> Result<Split> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(DataError::InvalidSetting(format!(
            "validation fraction {val_fraction} must be in [0, 1)"
        )));
    }
    let mut v = images.to_vec();
    v.sort();
    v.dedup();
    let mut rng = SplitMix64::new(seed);
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    let n = v.len();
    let mut n_val = (n as f64 * val_fraction).round() as usize;
    if val_fraction > 0.0 && n > 1 {
        n_val = n_val.max(1);
    }
    n_val = n_val.min(n.saturating_sub(1));
    let train = v.split_off(n_val);
    Ok(Split {
        seed,
        val_fraction,
        train,
        val: v,
    })
}

impl Split {
    /// Record the split as JSON (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| DataError::InvalidSetting(e.to_string()))?;
        ldm_io::atomic::write_bytes(path, text.as_bytes())
            .map(|_| ())
            .map_err(|e| DataError::io(path, e))
    }

    /// Read a recorded split.
    pub fn load(path: &Path) -> Result<Split> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| DataError::BadDataset {
            path: path.to_path_buf(),
            reason: format!("not a split file: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_and_disjoint() {
        let imgs: Vec<PathBuf> = (0..10).map(|i| PathBuf::from(format!("x{i}.nii"))).collect();
        let a = split(&imgs, 0.2, 1).unwrap();
        let mut rev = imgs.clone();
        rev.reverse();
        let b = split(&rev, 0.2, 1).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.val.len(), 2);
        assert_eq!(a.train.len(), 8);
        assert!(a.val.iter().all(|v| !a.train.contains(v)));
        let c = split(&imgs, 0.2, 2).unwrap();
        assert_ne!(a.val, c.val);
        assert_eq!(split(&imgs[..1], 0.5, 0).unwrap().train.len(), 1);
        let dir = std::env::temp_dir().join(format!("ldm-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("split.json");
        a.save(&f).unwrap();
        assert_eq!(Split::load(&f).unwrap(), a);
        std::fs::write(&f, "{").unwrap();
        assert!(Split::load(&f).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(split(&imgs, 1.0, 0).is_err());
    }
}
