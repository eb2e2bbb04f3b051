//! A training step's view of this rank's share of the global batch (single process: the whole
//! batch): where its samples sit, so that the trainers draw their per-sample noise and timesteps
//! at that offset of the global streams, and the reduction that averages each network's gradient
//! over the ranks between the backward pass and the optimiser step (`distributed.rs` supplies it).

use ldm_dist::Shard;

use super::TrainError;

/// The networks whose gradients a step averages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Autoencoder,
    Discriminator,
    Unet,
}

/// Averages one network's flat gradient over the ranks, in place.
pub type ReduceFn<'a> = dyn FnMut(Network, &mut [f32]) -> Result<(), TrainError> + 'a;

/// This rank's share of one step's global batch.
pub struct BatchPart<'a> {
    pub shard: Shard,
    reduce: Option<&'a mut ReduceFn<'a>>,
}

impl BatchPart<'static> {
    /// A single process: the whole batch, nothing to average.
    pub fn whole() -> Self {
        BatchPart {
            shard: Shard::single(),
            reduce: None,
        }
    }
}

impl<'a> BatchPart<'a> {
    /// Rank `shard.rank` of `shard.world`, averaging gradients with `reduce`.
    pub fn new(shard: Shard, reduce: &'a mut ReduceFn<'a>) -> Self {
        BatchPart {
            shard,
            reduce: Some(reduce),
        }
    }

    /// Position of this rank's first sample in the global batch, for a local batch of `n`.
    pub fn first_sample(&self, n: usize) -> u64 {
        self.shard.batch_offset(n) as u64
    }

    /// Averages `grad` of `net` over the ranks (nothing for a single process).
    pub fn reduce(&mut self, net: Network, grad: &mut [f32]) -> Result<(), TrainError> {
        match self.reduce.as_mut() {
            Some(f) => f(net, grad),
            None => Ok(()),
        }
    }
}
