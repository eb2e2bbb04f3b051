//! ldm-dist: what a data-parallel training run needs around its arithmetic, on the host and with
//! std only: the launch environment (torchrun's or Slurm's variables, [`env`]), a TCP rendezvous
//! on MASTER_ADDR:MASTER_PORT that hands rank 0's blob to every rank ([`rendezvous`]), host
//! collectives over those connections ([`group`]), gradient buckets in backward order
//! ([`bucket`]), per-rank sample sharding ([`shard`]), the rank-0-only write policy ([`writer`])
//! and a launcher of local worker processes ([`launch`]).
//!
//! The GPU path will carry an NCCL unique id in the rendezvous blob and hand the buckets to NCCL
//! instead of [`group::HostGroup::all_reduce_mean`]; everything else stays as it is.

pub mod bucket;
pub mod env;
pub mod group;
pub mod launch;
pub mod rendezvous;
pub mod shard;
mod wire;
pub mod writer;

pub use bucket::{BucketPlan, BucketSchedule};
pub use env::{LaunchKind, WorldSpec};
pub use group::HostGroup;
pub use rendezvous::{rendezvous, RendezvousOptions};
pub use shard::Shard;
pub use writer::WriteRole;

use thiserror::Error;

/// Everything that can go wrong in this crate; each message names the variable, rank or address.
#[derive(Debug, Error)]
pub enum DistError {
    /// Launch environment inconsistent or unparsable.
    #[error("launch environment: {0}")]
    Env(String),
    /// The rendezvous did not complete (missing ranks, mismatches, unreachable rank 0).
    #[error("rendezvous at {addr}: {msg}")]
    Rendezvous { addr: String, msg: String },
    /// A collective operation failed (a peer died, timed out, or is out of step).
    #[error("{0}")]
    Collective(String),
    /// Bad arguments from the caller (bucket plans, buffer sizes).
    #[error("{0}")]
    Invalid(String),
    /// Starting or supervising local worker processes failed.
    #[error("launcher: {0}")]
    Launch(String),
}
