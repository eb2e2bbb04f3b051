//! Host collectives over the rendezvous connections (a star around rank 0): barrier, broadcast
//! from rank 0, all-reduce-mean of f32 buffers, and a check that every rank holds the same state.
//!
//! The all-reduce sums at rank 0 in rank order (rank 0's values, then rank 1's added, ...),
//! divides by the world size there, and sends that one result back, so every rank ends with
//! bitwise the same buffer. Each operation carries a sequence number; a rank that calls a
//! different operation (out of step), a closed connection (a dead rank) or a silent peer (past the
//! operation timeout) is an error naming the rank, and rank 0 tells the others why it gives up
//! before it returns, so no rank waits for an answer that will not come.

use std::cell::Cell;
use std::net::TcpStream;
use std::time::Duration;

use crate::wire::{self, tag};
use crate::DistError;

/// Longest status text or blob accepted in a byte broadcast.
const MAX_BYTES: u64 = 16 << 20;

/// One process's handle on the group of ranks.
pub struct HostGroup {
    rank: usize,
    world: usize,
    /// Rank 0: the connections to ranks 1.. (index r - 1). Other ranks: the one to rank 0.
    links: Vec<TcpStream>,
    seq: Cell<u64>,
}

impl std::fmt::Debug for HostGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HostGroup {{ rank: {}, world: {} }}",
            self.rank, self.world
        )
    }
}

impl HostGroup {
    /// A group of one: every collective returns at once with the buffer unchanged.
    pub fn single() -> Self {
        HostGroup {
            rank: 0,
            world: 1,
            links: Vec::new(),
            seq: Cell::new(0),
        }
    }

    /// Built by the rendezvous; `links` as described on the struct, timeouts already set.
    pub(crate) fn from_links(rank: usize, world: usize, links: Vec<TcpStream>) -> Self {
        HostGroup {
            rank,
            world,
            links,
            seq: Cell::new(0),
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Sets how long one operation may wait for a peer (default: the rendezvous options').
    pub fn set_timeout(&self, t: Duration) -> Result<(), DistError> {
        for s in &self.links {
            s.set_read_timeout(Some(t))
                .and_then(|_| s.set_write_timeout(Some(t)))
                .map_err(|e| DistError::Collective(e.to_string()))?;
        }
        Ok(())
    }

    fn next_seq(&self) -> u64 {
        let s = self.seq.get() + 1;
        self.seq.set(s);
        s
    }

    /// Rank 0 only: tells every other rank why the run stops (best effort, short timeout).
    pub fn abort(&self, reason: &str) {
        if !self.is_root() {
            return;
        }
        for s in &self.links {
            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = wire::write_bytes(s, tag::ABORT, 0, reason.as_bytes());
        }
    }

    /// Rank 0's error for rank `r`: sent to the others, then returned.
    fn root_fail(&self, msg: String) -> DistError {
        self.abort(&msg);
        DistError::Collective(msg)
    }

    /// Reads the next header from rank 0 (non-root), turning an abort into its reason.
    fn expect_from_root(&self, op: &str, seq: u64, len: u64) -> Result<(), DistError> {
        let s = &self.links[0];
        let lost = |e: std::io::Error| {
            DistError::Collective(format!(
                "rank {}: lost rank 0 during {op}: {}",
                self.rank,
                wire::describe(&e)
            ))
        };
        let h = wire::read_header(s).map_err(lost)?;
        if h.tag == tag::ABORT {
            let text = if h.len <= MAX_BYTES {
                wire::read_payload(s, h.len).ok()
            } else {
                None
            };
            let text = text
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            return Err(DistError::Collective(format!(
                "rank {}: rank 0 stopped the run: {text}",
                self.rank
            )));
        }
        if h.tag != tag::DATA || h.seq != seq || h.len != len {
            return Err(DistError::Collective(format!(
                "rank {}: rank 0 is out of step during {op} (operation #{} of {} bytes, expected #{seq} of {len})",
                self.rank, h.seq, h.len
            )));
        }
        Ok(())
    }

    /// Rank 0 reads the next header from rank `r` and checks it.
    fn expect_from(&self, r: usize, op: &str, seq: u64, len: u64) -> Result<(), DistError> {
        let s = &self.links[r - 1];
        let h = wire::read_header(s).map_err(|e| {
            self.root_fail(format!(
                "rank {r} is gone during {op}: {}",
                wire::describe(&e)
            ))
        })?;
        if h.tag != tag::DATA || h.seq != seq || h.len != len {
            return Err(self.root_fail(format!(
                "rank {r} is out of step during {op} (sent operation #{} of {} bytes, expected #{seq} of {len})",
                h.seq, h.len
            )));
        }
        Ok(())
    }

    /// Averages `buf` over all ranks; afterwards every rank holds bitwise the same values.
    pub fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<(), DistError> {
        if self.world == 1 {
            return Ok(());
        }
        let seq = self.next_seq();
        let op = format!("all-reduce #{seq}");
        let len = (buf.len() * 4) as u64;
        if self.is_root() {
            for r in 1..self.world {
                self.expect_from(r, &op, seq, len)?;
                wire::read_f32_add(&self.links[r - 1], buf).map_err(|e| {
                    self.root_fail(format!(
                        "rank {r} is gone during {op}: {}",
                        wire::describe(&e)
                    ))
                })?;
            }
            let w = self.world as f32;
            buf.iter_mut().for_each(|v| *v /= w);
            for r in 1..self.world {
                wire::write_f32(&self.links[r - 1], tag::DATA, seq, buf).map_err(|e| {
                    self.root_fail(format!(
                        "rank {r} is gone during {op}: {}",
                        wire::describe(&e)
                    ))
                })?;
            }
        } else {
            let s = &self.links[0];
            wire::write_f32(s, tag::DATA, seq, buf).map_err(|e| {
                DistError::Collective(format!(
                    "rank {}: lost rank 0 during {op}: {}",
                    self.rank,
                    wire::describe(&e)
                ))
            })?;
            self.expect_from_root(&op, seq, len)?;
            wire::read_f32_into(s, buf).map_err(|e| {
                DistError::Collective(format!(
                    "rank {}: lost rank 0 during {op}: {}",
                    self.rank,
                    wire::describe(&e)
                ))
            })?;
        }
        Ok(())
    }

    /// Every rank waits until all have arrived.
    pub fn barrier(&self) -> Result<(), DistError> {
        self.all_reduce_mean(&mut [])
    }

    /// Copies rank 0's `buf` to every rank (same length on all ranks).
    pub fn broadcast(&self, buf: &mut [f32]) -> Result<(), DistError> {
        if self.world == 1 {
            return Ok(());
        }
        let seq = self.next_seq();
        let op = format!("broadcast #{seq}");
        if self.is_root() {
            for r in 1..self.world {
                wire::write_f32(&self.links[r - 1], tag::DATA, seq, buf).map_err(|e| {
                    self.root_fail(format!(
                        "rank {r} is gone during {op}: {}",
                        wire::describe(&e)
                    ))
                })?;
            }
        } else {
            self.expect_from_root(&op, seq, (buf.len() * 4) as u64)?;
            wire::read_f32_into(&self.links[0], buf).map_err(|e| {
                DistError::Collective(format!(
                    "rank {}: lost rank 0 during {op}: {}",
                    self.rank,
                    wire::describe(&e)
                ))
            })?;
        }
        Ok(())
    }

    /// Copies rank 0's bytes (up to 16 MiB) to every rank; the others' input is replaced.
    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>) -> Result<(), DistError> {
        if self.world == 1 {
            return Ok(());
        }
        let seq = self.next_seq();
        let op = format!("broadcast #{seq}");
        if self.is_root() {
            if bytes.len() as u64 > MAX_BYTES {
                return Err(self.root_fail(format!(
                    "{op}: {} bytes is over the 16 MiB limit",
                    bytes.len()
                )));
            }
            for r in 1..self.world {
                wire::write_bytes(&self.links[r - 1], tag::DATA, seq, bytes).map_err(|e| {
                    self.root_fail(format!(
                        "rank {r} is gone during {op}: {}",
                        wire::describe(&e)
                    ))
                })?;
            }
        } else {
            let s = &self.links[0];
            let lost = |e: std::io::Error| {
                DistError::Collective(format!(
                    "rank {}: lost rank 0 during {op}: {}",
                    self.rank,
                    wire::describe(&e)
                ))
            };
            let h = wire::read_header(s).map_err(lost)?;
            if h.tag == tag::ABORT || h.tag != tag::DATA || h.seq != seq || h.len > MAX_BYTES {
                // Re-read through the common check for its message (the header was consumed).
                let text = if h.tag == tag::ABORT && h.len <= MAX_BYTES {
                    wire::read_payload(s, h.len).ok()
                } else {
                    None
                };
                let why = text
                    .map(|b| format!("rank 0 stopped the run: {}", String::from_utf8_lossy(&b)))
                    .unwrap_or_else(|| {
                        format!(
                            "rank 0 is out of step during {op} (operation #{}, {} bytes)",
                            h.seq, h.len
                        )
                    });
                return Err(DistError::Collective(format!("rank {}: {why}", self.rank)));
            }
            *bytes = wire::read_payload(s, h.len).map_err(lost)?;
        }
        Ok(())
    }

    /// Checks that every rank passes the same `fingerprint` of `what` (e.g. a hash of the
    /// parameters); a difference is an error on every rank naming the ranks that differ from 0.
    pub fn check_identical(&self, what: &str, fingerprint: u64) -> Result<(), DistError> {
        if self.world == 1 {
            return Ok(());
        }
        let seq = self.next_seq();
        let op = format!("the check of {what} (#{seq})");
        let mut verdict: Vec<u8> = Vec::new();
        if self.is_root() {
            let mut differ = Vec::new();
            for r in 1..self.world {
                self.expect_from(r, &op, seq, 8)?;
                let b = wire::read_payload(&self.links[r - 1], 8).map_err(|e| {
                    self.root_fail(format!(
                        "rank {r} is gone during {op}: {}",
                        wire::describe(&e)
                    ))
                })?;
                if b != fingerprint.to_le_bytes() {
                    differ.push(r.to_string());
                }
            }
            if !differ.is_empty() {
                verdict = format!(
                    "{what} on rank(s) {} differ from rank 0's",
                    differ.join(", ")
                )
                .into_bytes();
            }
        } else {
            wire::write_bytes(&self.links[0], tag::DATA, seq, &fingerprint.to_le_bytes()).map_err(
                |e| {
                    DistError::Collective(format!(
                        "rank {}: lost rank 0 during {op}: {}",
                        self.rank,
                        wire::describe(&e)
                    ))
                },
            )?;
        }
        self.broadcast_bytes(&mut verdict)?;
        if verdict.is_empty() {
            Ok(())
        } else {
            Err(DistError::Collective(format!(
                "rank {}: {}",
                self.rank,
                String::from_utf8_lossy(&verdict)
            )))
        }
    }
}

/// FNV-1a over the bit patterns of f32 buffers, for [`HostGroup::check_identical`].
pub fn fingerprint_f32(bufs: &[&[f32]]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in bufs {
        for v in b.iter() {
            for byte in v.to_bits().to_le_bytes() {
                h ^= byte as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01B3);
            }
        }
        h ^= b.len() as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// FNV-1a over bytes (run fingerprints: configuration text and options).
pub fn fingerprint_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}
