//! The bundle's preprocessing chain on one file — channel select, RAS, 1.1 mm trilinear, centre
//! crop to 144x176x112, 0..99.5th percentile scaling to [0, 1] — and an on-disk cache of its
//! results keyed by source file (path, size, mtime) and settings, so epochs never re-read NIfTI.

use std::path::{Path, PathBuf};

use super::error::{DataError, Result};
use ldm_io::budget::{gib, Budget};

use super::nifti_io::{read_checked_info, read_volume_within, NiftiInfo};
use super::transforms::{
    center_crop, center_crop_shape, orient_ras, ras_grid, resample_to_spacing, scale_percentiles, spacing_grid,
    PercentileScaling,
};
use super::volume::Volume;

/// Settings of the chain; `Default` is the bundle's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreprocessConfig {
    /// Channel of a 4-D file (Task01: 0 = FLAIR); 3-D files accept only 0.
    pub channel: usize,
    /// Target voxel size in mm.
    pub spacing: [f64; 3],
    /// Centre crop size (x, y, z) after resampling.
    pub roi: [usize; 3],
    /// Zero-pad axes shorter than `roi` (ResizeWithPadOrCrop) so every output has shape `roi`;
    /// `false` is exactly `CenterSpatialCrop`, which leaves short axes short.
    pub pad_to_roi: bool,
    pub scaling: PercentileScaling,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            channel: 0,
            spacing: [1.1; 3],
            roi: [144, 176, 112],
            pad_to_roi: true,
            scaling: PercentileScaling::default(),
        }
    }
}

impl PreprocessConfig {
    /// Reject settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(DataError::InvalidSetting(format!(
                "spacing {:?} must be positive",
                self.spacing
            )));
        }
        if self.roi.contains(&0) {
            return Err(DataError::InvalidSetting(format!(
                "crop size {:?} must be positive",
                self.roi
            )));
        }
        let s = &self.scaling;
        if !(0.0..=100.0).contains(&s.lower) || !(0.0..=100.0).contains(&s.upper) || s.lower > s.upper {
            return Err(DataError::InvalidSetting(format!(
                "percentiles {}..{} must satisfy 0 <= lower <= upper <= 100",
                s.lower, s.upper
            )));
        }
        Ok(())
    }

    /// A stable text form of every setting, used in cache keys and output descriptions.
    pub fn fingerprint(&self) -> String {
        let s = &self.scaling;
        format!(
            "ch{} sp{:?} roi{:?} pad{} pct{}-{} b{}-{} clip{}",
            self.channel, self.spacing, self.roi, self.pad_to_roi, s.lower, s.upper, s.b_min, s.b_max, s.clip
        )
    }
}

/// One preprocessed volume and what the chain saw on the way.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    pub volume: Volume,
    /// Shape and voxel size of the source (selected channel, before reorientation).
    pub source_dims: [usize; 3],
    pub source_spacing: [f64; 3],
    /// Shape after resampling, before cropping.
    pub resampled_dims: [usize; 3],
    /// Intensities mapped to b_min and b_max.
    pub a_min: f64,
    pub a_max: f64,
}

/// Run the chain on a volume already loaded. `path` only names the source in errors.
pub fn preprocess_volume(v: Volume, cfg: &PreprocessConfig, path: &Path) -> Result<Preprocessed> {
    cfg.validate()?;
    let affine_err = |reason: String| DataError::BadAffine {
        path: path.to_path_buf(),
        reason,
    };
    let source_dims = v.dims;
    let source_spacing = v.spacing();
    let ras = orient_ras(&v).map_err(affine_err)?;
    drop(v);
    let resampled = resample_to_spacing(&ras, cfg.spacing).map_err(affine_err)?;
    drop(ras);
    let resampled_dims = resampled.dims;
    let mut cropped = center_crop(&resampled, cfg.roi, cfg.pad_to_roi);
    drop(resampled);
    let (a_min, a_max) = scale_percentiles(&mut cropped, &cfg.scaling).map_err(|reason| DataError::BadShape {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(Preprocessed {
        volume: cropped,
        source_dims,
        source_spacing,
        resampled_dims,
        a_min,
        a_max,
    })
}

/// What the chain will make of a source, computed from its header alone, and the most memory it
/// holds at once: every step keeps its input and its output alive together (read: the volume;
/// RAS: two copies of the source; resampling: source + resampled; crop: resampled + output;
/// percentiles: the output and a sorted copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreprocessPlan {
    pub source_dims: [usize; 3],
    pub resampled_dims: [usize; 3],
    pub output_dims: [usize; 3],
    pub peak_bytes: u128,
}

/// Writer buffers and decoding steps on top of the volumes (gzip state, one row, one chunk).
const PLAN_SLACK: u128 = 4 << 20;

fn voxels(d: [usize; 3]) -> u128 {
    d.iter().map(|&n| n as u128).product()
}

impl PreprocessPlan {
    /// The plan for a source whose header is `info` (selected channel; shapes only).
    pub fn new(info: &NiftiInfo, cfg: &PreprocessConfig) -> std::result::Result<PreprocessPlan, String> {
        let (ras_dims, ras_affine) = ras_grid(info.dims, &info.affine)?;
        let (resampled_dims, _) = spacing_grid(ras_dims, &ras_affine, cfg.spacing)?;
        let output_dims = center_crop_shape(resampled_dims, cfg.roi, cfg.pad_to_roi);
        let (src, res, out) = (voxels(info.dims), voxels(resampled_dims), voxels(output_dims));
        let peak = [2 * src, src + res, res + out, 2 * out].into_iter().max().unwrap_or(0);
        Ok(PreprocessPlan {
            source_dims: info.dims,
            resampled_dims,
            output_dims,
            peak_bytes: 4 * peak + PLAN_SLACK,
        })
    }

    /// Ok when the peak fits `budget`; otherwise the refusal with the byte count and the shapes.
    pub fn check(&self, budget: Budget) -> std::result::Result<(), String> {
        let d = |x: [usize; 3]| format!("{}x{}x{}", x[0], x[1], x[2]);
        if self.peak_bytes <= budget.limit() as u128 {
            return Ok(());
        }
        Err(format!(
            "preprocessing needs {} bytes ({}) at its peak (source {}, resampled {}, output {}), above the memory limit of {} bytes ({}); raise it with --max-memory if the machine has the memory",
            self.peak_bytes,
            gib(self.peak_bytes),
            d(self.source_dims),
            d(self.resampled_dims),
            d(self.output_dims),
            budget.limit(),
            gib(budget.limit() as u128)
        ))
    }
}

/// Bytes the output alone needs (the crop and its sorted copy for the percentiles), known from
/// the settings before any file is read.
pub fn output_bytes(cfg: &PreprocessConfig) -> u128 {
    8 * voxels(cfg.roi)
}

/// Read a NIfTI file and run the chain, within the default budget (half of physical memory).
pub fn preprocess_file(path: &Path, cfg: &PreprocessConfig) -> Result<Preprocessed> {
    preprocess_file_within(path, cfg, Budget::default())
}

/// Read a NIfTI file and run the chain, refusing before any voxel is read when the chain's
/// peak memory (`PreprocessPlan`) exceeds `budget`.
pub fn preprocess_file_within(path: &Path, cfg: &PreprocessConfig, budget: Budget) -> Result<Preprocessed> {
    cfg.validate()?;
    let info = read_checked_info(path)?;
    let plan = PreprocessPlan::new(&info, cfg).map_err(|reason| DataError::BadAffine {
        path: path.to_path_buf(),
        reason,
    })?;
    plan.check(budget).map_err(|reason| DataError::TooLarge {
        path: path.to_path_buf(),
        reason,
    })?;
    let v = read_volume_within(path, Some(cfg.channel), budget)?;
    preprocess_volume(v, cfg, path)
}

const CACHE_MAGIC: &[u8; 8] = b"LDMPREP1";

/// Preprocessed volumes stored under a folder, one file per (source, settings).
#[derive(Debug, Clone)]
pub struct PreprocessCache {
    dir: PathBuf,
}

impl PreprocessCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PreprocessCache { dir: dir.into() }
    }

    /// The cache file for `source` under `cfg`: md5 of canonical path, size, mtime and settings.
    pub fn entry_path(&self, source: &Path, cfg: &PreprocessConfig) -> Result<PathBuf> {
        let canon = source.canonicalize().map_err(|e| DataError::io(source, e))?;
        let meta = std::fs::metadata(&canon).map_err(|e| DataError::io(source, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = format!("{}|{}|{}|{}", canon.display(), meta.len(), mtime, cfg.fingerprint());
        Ok(self.dir.join(format!("{:x}.prep", md5::compute(key.as_bytes()))))
    }

    /// The preprocessed volume for `source`, from the cache when present and intact, otherwise
    /// computed and stored. Returns the volume and whether it came from the cache.
    pub fn get_or_compute(&self, source: &Path, cfg: &PreprocessConfig) -> Result<(Volume, bool)> {
        let entry = self.entry_path(source, cfg)?;
        if let Some(v) = load_entry(&entry) {
            return Ok((v, true));
        }
        let p = preprocess_file(source, cfg)?;
        store_entry(&self.dir, &entry, &p.volume)?;
        Ok((p.volume, false))
    }
}

fn load_entry(path: &Path) -> Option<Volume> {
    let bytes = ldm_io::input::read_all(path, Budget::default()).ok()?;
    let head = 8 + 3 * 8 + 16 * 8;
    if bytes.len() < head || &bytes[..8] != CACHE_MAGIC {
        return None;
    }
    let u = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
    let dims = [u(8) as usize, u(16) as usize, u(24) as usize];
    let n = dims[0].checked_mul(dims[1])?.checked_mul(dims[2])?;
    if bytes.len() != head.checked_add(n.checked_mul(4)?)? {
        return None;
    }
    let mut affine = [[0.0; 4]; 4];
    for (k, v) in affine.iter_mut().flatten().enumerate() {
        *v = f64::from_bits(u(32 + 8 * k));
    }
    let data = bytes[head..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Volume::new(dims, data, affine)
}

fn store_entry(dir: &Path, path: &Path, v: &Volume) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut buf = Vec::with_capacity(8 + 24 + 128 + v.data.len() * 4);
    buf.extend_from_slice(CACHE_MAGIC);
    for d in v.dims {
        buf.extend_from_slice(&(d as u64).to_le_bytes());
    }
    for x in v.affine.iter().flatten() {
        buf.extend_from_slice(&x.to_bits().to_le_bytes());
    }
    for x in &v.data {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    ldm_io::atomic::write_bytes(path, &buf).map(|_| ()).map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::nifti_io::write_volume;

    #[test]
    fn the_plan_predicts_the_shapes_the_chain_makes() {
        let dir = std::env::temp_dir().join(format!("ldm-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // LPS-ish, anisotropic, so reorientation and resampling both change the grid
        let affine = [
            [-0.9, 0.0, 0.0, 30.0],
            [0.0, 0.0, 1.7, -20.0],
            [0.0, -1.2, 0.0, 10.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let dims = [37, 23, 19];
        let data = (0..37 * 23 * 19).map(|i| (i % 101) as f32).collect();
        let path = dir.join("v.nii.gz");
        write_volume(&path, &Volume::new(dims, data, affine).unwrap(), "plan").unwrap();
        for (roi, pad) in [([16, 16, 16], true), ([40, 8, 50], false), ([40, 8, 50], true)] {
            let cfg = PreprocessConfig {
                roi,
                pad_to_roi: pad,
                ..Default::default()
            };
            let plan = PreprocessPlan::new(&read_checked_info(&path).unwrap(), &cfg).unwrap();
            let done = preprocess_file(&path, &cfg).unwrap();
            assert_eq!(plan.source_dims, done.source_dims);
            assert_eq!(plan.resampled_dims, done.resampled_dims);
            assert_eq!(plan.output_dims, done.volume.dims);
            assert!(plan.check(Budget::new(plan.peak_bytes as u64)).is_ok());
            let refused = preprocess_file_within(&path, &cfg, Budget::new(plan.peak_bytes as u64 - 1)).unwrap_err();
            assert!(refused.to_string().contains(&format!("needs {} bytes", plan.peak_bytes)), "{refused}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
