//! `--shard I/N`: which seeds of a batch one job of a job array generates. Shard I of N takes a
//! contiguous block of the seed range; the blocks of I = 0..N-1 partition the range exactly
//! (sizes differ by at most one), so no seed is generated twice and none is skipped.

use std::ops::Range;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShardError {
    #[error("bad --shard '{0}': expected I/N with 0 <= I < N, e.g. 0/4 (I is the 0-based job index, N the job count)")]
    Syntax(String),
    #[error("bad --shard '{spec}': index {index} must be below the shard count {count} (shards are numbered from 0)")]
    IndexOutOfRange {
        spec: String,
        index: u64,
        count: u64,
    },
    #[error("bad --shard '{0}': the shard count must be at least 1")]
    ZeroCount(String),
}

/// One job's place in a job array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The whole batch in one job.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn parse(spec: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax(spec.to_string());
        let (i, n) = spec.trim().split_once('/').ok_or_else(syntax)?;
        let index: u64 = i.trim().parse().map_err(|_| syntax())?;
        let count: u64 = n.trim().parse().map_err(|_| syntax())?;
        if count == 0 {
            return Err(ShardError::ZeroCount(spec.to_string()));
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange {
                spec: spec.to_string(),
                index,
                count,
            });
        }
        Ok(Shard { index, count })
    }

    /// Positions (0-based, within a batch of `total` volumes) that this shard generates.
    pub fn range(&self, total: u64) -> Range<u64> {
        let at = |i: u64| ((i as u128 * total as u128) / self.count as u128) as u64;
        at(self.index)..at(self.index + 1)
    }

    /// Suffix that keeps per-shard files (the manifest) apart: empty for a single job.
    pub fn file_tag(&self) -> String {
        if self.count == 1 {
            String::new()
        } else {
            format!(".shard-{}-of-{}", self.index, self.count)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_good_specs_and_rejects_bad_ones() {
        assert_eq!(Shard::parse("0/1"), Ok(Shard::ALL));
        assert_eq!(Shard::parse(" 3 / 4 "), Ok(Shard { index: 3, count: 4 }));
        for bad in ["", "1", "a/b", "1/", "/2", "-1/2", "1-2", "1/2/3", "0.5/2"] {
            assert!(
                matches!(Shard::parse(bad), Err(ShardError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Shard::parse("2/2"),
            Err(ShardError::IndexOutOfRange { .. })
        ));
        assert!(matches!(Shard::parse("0/0"), Err(ShardError::ZeroCount(_))));
    }

    #[test]
    fn shards_partition_every_range_exactly() {
        for total in [0u64, 1, 2, 5, 7, 10, 100, 101] {
            for count in 1..=12u64 {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(total);
                    assert_eq!(r.start, next, "total {total} count {count} index {index}");
                    assert!(r.end - r.start <= total / count + 1);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
        let big = Shard { index: 2, count: 3 }.range(u64::MAX);
        assert_eq!(big.end, u64::MAX);
    }
}
