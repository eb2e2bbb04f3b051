//! Rank-0-only writing: in a data-parallel run every rank holds the same model, so only rank 0
//! writes the run folder (log, checkpoints, plots, exports) and prints progress; the others
//! compute and communicate. The training loop asks its [`WriteRole`] before any write.

/// Whether this process writes the run's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRole {
    /// Rank 0 (or a single process): writes logs, checkpoints and exports.
    Writer,
    /// Every other rank: writes nothing.
    Silent,
}

impl WriteRole {
    pub fn for_rank(rank: usize) -> Self {
        if rank == 0 {
            WriteRole::Writer
        } else {
            WriteRole::Silent
        }
    }

    pub fn writes(self) -> bool {
        self == WriteRole::Writer
    }

    /// Runs `write` on the writer only (`Ok(None)` elsewhere).
    pub fn run<T, E>(self, write: impl FnOnce() -> Result<T, E>) -> Result<Option<T>, E> {
        if self.writes() {
            write().map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rank_zero_writes() {
        let mut calls = 0;
        for rank in 0..4 {
            let r: Result<Option<usize>, ()> = WriteRole::for_rank(rank).run(|| {
                calls += 1;
                Ok(rank)
            });
            assert_eq!(r.unwrap(), if rank == 0 { Some(0) } else { None });
        }
        assert_eq!(calls, 1);
        assert!(WriteRole::for_rank(0).writes() && !WriteRole::for_rank(3).writes());
    }
}
