//! Which samples each rank trains on. The training loop numbers its samples globally: sample k
//! is a pure function of (seed, k) (epoch e = k / n visits the n volumes in a permutation drawn
//! from (seed, e)). With W ranks and a per-rank batch b, step s uses the global samples
//! `[s b W, (s + 1) b W)` and rank r takes the block of b starting at `(s W + r) b`. So:
//! - the ranks' samples of any epoch are disjoint and together are the whole epoch, and which
//!   ones a rank gets is a function of (seed, rank, epoch) only;
//! - the W blocks of a step are, in rank order, exactly the batch of one process with batch b W
//!   (same samples, same per-sample randomness), which is what makes N ranks on N shards give
//!   the single-process gradient of the whole batch.

use crate::DistError;

/// One rank's place in the sample stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    pub fn new(rank: usize, world: usize) -> Result<Self, DistError> {
        if world == 0 || rank >= world {
            return Err(DistError::Invalid(format!(
                "rank {rank} of a world of {world}"
            )));
        }
        Ok(Shard { rank, world })
    }

    /// The whole stream (one process).
    pub fn single() -> Self {
        Shard { rank: 0, world: 1 }
    }

    /// Global index of sample `i` of this rank's part of step `step` (per-rank batch `b`).
    pub fn sample_index(&self, step: u64, b: usize, i: usize) -> u64 {
        (step * self.world as u64 + self.rank as u64) * b as u64 + i as u64
    }

    /// Position of this rank's first sample in the step's global batch of `b W` samples.
    pub fn batch_offset(&self, b: usize) -> usize {
        self.rank * b
    }

    /// The rank (of this shard's world) that trains on global sample `k`.
    pub fn owner(&self, k: u64, b: usize) -> usize {
        ((k / b.max(1) as u64) % self.world as u64) as usize
    }

    /// This rank's positions (global sample indices, ascending) within epoch `epoch` of `n`
    /// samples.
    pub fn epoch_positions(&self, epoch: u64, n: usize, b: usize) -> Vec<u64> {
        let start = epoch * n as u64;
        (start..start + n as u64)
            .filter(|&k| self.owner(k, b) == self.rank)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_partitioned_between_ranks() {
        for (n, b, w) in [(7usize, 2usize, 3usize), (4, 1, 2), (10, 3, 4), (5, 5, 1)] {
            for epoch in 0..4u64 {
                let mut all: Vec<u64> = (0..w)
                    .flat_map(|r| Shard::new(r, w).unwrap().epoch_positions(epoch, n, b))
                    .collect();
                all.sort();
                let want: Vec<u64> = (epoch * n as u64..(epoch + 1) * n as u64).collect();
                assert_eq!(
                    all, want,
                    "n {n} b {b} w {w} epoch {epoch}: disjoint and complete"
                );
            }
        }
        // Deterministic and rank-dependent.
        let a = Shard::new(1, 3).unwrap();
        assert_eq!(a.epoch_positions(2, 7, 2), a.epoch_positions(2, 7, 2));
        assert_ne!(
            a.epoch_positions(2, 7, 2),
            Shard::new(2, 3).unwrap().epoch_positions(2, 7, 2)
        );
    }

    #[test]
    fn ranks_of_a_step_together_are_the_single_process_batch() {
        let (b, w) = (3usize, 4usize);
        for step in [0u64, 1, 17] {
            let joined: Vec<u64> = (0..w)
                .flat_map(|r| {
                    (0..b).map(move |i| Shard::new(r, w).unwrap().sample_index(step, b, i))
                })
                .collect();
            let single: Vec<u64> = (0..b * w)
                .map(|i| Shard::single().sample_index(step, b * w, i))
                .collect();
            assert_eq!(joined, single);
            for r in 0..w {
                let s = Shard::new(r, w).unwrap();
                assert!((0..b).all(|i| s.owner(s.sample_index(step, b, i), b) == r));
                assert_eq!(
                    s.sample_index(step, b, 0) - single[0],
                    s.batch_offset(b) as u64
                );
            }
        }
        assert!(Shard::new(2, 2).is_err() && Shard::new(0, 0).is_err());
    }
}
