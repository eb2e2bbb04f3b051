//! Training-side loading: preprocess (or fetch from the cache) a list of files once, keeping
//! bad files out with a warning when asked, and draw seeded random patches
//! (`RandSpatialCrop(112x128x80)` for the autoencoder) in a reshuffled order each epoch.

use std::path::{Path, PathBuf};

use super::error::Result;
use super::preprocess::{preprocess_file, PreprocessCache, PreprocessConfig};
use super::rng::SplitMix64;
use super::transforms::random_crop;
use super::volume::Volume;

/// The bundle's autoencoder training patch.
pub const VAE_PATCH: [usize; 3] = [112, 128, 80];

/// Preprocessed volumes in memory and the files left out.
#[derive(Debug, Clone, Default)]
pub struct LoadedSet {
    pub items: Vec<(PathBuf, Volume)>,
    /// Files that failed, with the error text (only with `skip_bad`).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Preprocess every file (through `cache` when given). With `skip_bad`, a failing file is
/// recorded in `skipped` and the rest go on; otherwise the first failure is returned.
/// `progress(i, path, from_cache)` is called after each file that loaded.
pub fn load_set(
    paths: &[PathBuf],
    cfg: &PreprocessConfig,
    cache: Option<&PreprocessCache>,
    skip_bad: bool,
    mut progress: impl FnMut(usize, &Path, bool),
) -> Result<LoadedSet> {
    cfg.validate()?;
    let mut set = LoadedSet::default();
    for (i, p) in paths.iter().enumerate() {
        let r = match cache {
            Some(c) => c.get_or_compute(p, cfg),
            None => preprocess_file(p, cfg).map(|x| (x.volume, false)),
        };
        match r {
            Ok((v, cached)) => {
                progress(i, p, cached);
                set.items.push((p.clone(), v));
            }
            Err(e) if skip_bad => set.skipped.push((p.clone(), e.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok(set)
}

/// Seeded patch sampling: each epoch visits every volume once in a fresh shuffled order and
/// cuts one uniformly placed patch from it. Same seed, same sequence.
#[derive(Debug, Clone)]
pub struct PatchSampler {
    rng: SplitMix64,
    order: Vec<usize>,
    pos: usize,
    roi: [usize; 3],
    epoch: usize,
}

impl PatchSampler {
    /// A sampler over `n` volumes (n > 0) cutting `roi` patches.
    pub fn new(n: usize, roi: [usize; 3], seed: u64) -> Self {
        PatchSampler {
            rng: SplitMix64::new(seed),
            order: (0..n).collect(),
            pos: n,
            roi,
            epoch: 0,
        }
    }

    /// Completed epochs.
    pub fn epoch(&self) -> usize {
        self.epoch.saturating_sub(1)
    }

    /// Index of the next volume and its patch; `None` when the set is empty or does not match `n`.
    pub fn next_patch(&mut self, volumes: &[Volume]) -> Option<(usize, Volume)> {
        if self.order.is_empty() || volumes.len() != self.order.len() {
            return None;
        }
        if self.pos >= self.order.len() {
            for i in (1..self.order.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                self.order.swap(i, j);
            }
            self.pos = 0;
            self.epoch += 1;
        }
        let idx = self.order[self.pos];
        self.pos += 1;
        Some((idx, random_crop(&volumes[idx], self.roi, &mut self.rng)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_visits_each_volume_once_per_epoch() {
        let vols: Vec<Volume> = (0..3)
            .map(|k| Volume::new([6, 6, 6], vec![k as f32; 216], super::super::affine::identity()).unwrap())
            .collect();
        let mut s = PatchSampler::new(3, [4, 4, 4], 11);
        let mut seen: Vec<usize> = (0..3).map(|_| s.next_patch(&vols).unwrap().0).collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2]);
        let (i, p) = s.next_patch(&vols).unwrap();
        assert_eq!(p.dims, [4, 4, 4]);
        assert!(p.data.iter().all(|&v| v == i as f32));
        assert_eq!(s.epoch(), 1);
        let mut t = PatchSampler::new(3, [4, 4, 4], 11);
        let a: Vec<_> = (0..5).map(|_| t.next_patch(&vols).unwrap()).collect();
        let mut u = PatchSampler::new(3, [4, 4, 4], 11);
        let b: Vec<_> = (0..5).map(|_| u.next_patch(&vols).unwrap()).collect();
        assert_eq!(
            a.iter().map(|x| (x.0, x.1.affine)).collect::<Vec<_>>(),
            b.iter().map(|x| (x.0, x.1.affine)).collect::<Vec<_>>()
        );
        assert!(PatchSampler::new(2, [4, 4, 4], 0).next_patch(&vols).is_none());
    }
}
