//! Data parallelism in the loop driver (`ldm-dist` does the networking; the trainers' side,
//! [`BatchPart`], is in `batch_part.rs`):
//! - [`DataParallel`]: the loop's side: rank 0's state broadcast at the start, gradients
//!   averaged bucket by bucket (reverse parameter order, [`ldm_dist::BucketPlan`]) through the
//!   host group, step logs averaged, the state checked identical on every rank at each
//!   checkpoint, and the write role (only rank 0 writes the run folder).
//!
//! With W ranks of batch b, the ranks of a step together train on exactly the samples and noise
//! of one process with batch b W ([`ldm_dist::shard`]), so the averaged gradient is that
//! process's gradient up to rounding.

use ldm_dist::group::fingerprint_f32;
use ldm_dist::{BucketPlan, BucketSchedule, DistError, HostGroup, Shard, WriteRole};

pub use super::batch_part::{BatchPart, Network, ReduceFn};
use super::diffusion::DiffusionStepLog;
use super::vae_gan::VaeStepLog;
use super::TrainError;
use crate::params::ParamStore;

/// Gradient bucket size when none is given (PyTorch DDP's default, 25 MB).
pub const DEFAULT_BUCKET_MB: f64 = 25.0;

/// How a run takes part in a data-parallel job (absent: a single process).
#[derive(Debug, Clone, Copy)]
pub struct Parallel<'a> {
    pub group: &'a HostGroup,
    /// Gradient bucket size in MB.
    pub bucket_mb: f64,
}

pub(crate) fn dist_err(e: DistError) -> TrainError {
    TrainError::Invalid(e.to_string())
}

/// The loop's data-parallel state.
pub struct DataParallel<'g> {
    group: Option<&'g HostGroup>,
    bucket_bytes: usize,
    plans: Vec<(Network, BucketPlan)>,
}

impl<'g> DataParallel<'g> {
    pub fn new(p: Option<Parallel<'g>>) -> Self {
        let bucket_mb = p.map_or(DEFAULT_BUCKET_MB, |p| p.bucket_mb);
        DataParallel {
            group: p.map(|p| p.group).filter(|g| g.world_size() > 1),
            bucket_bytes: (bucket_mb.max(0.0) * 1e6) as usize,
            plans: Vec::new(),
        }
    }

    pub fn world(&self) -> usize {
        self.group.map_or(1, |g| g.world_size())
    }

    pub fn shard(&self) -> Shard {
        self.group.map_or(Shard::single(), |g| Shard {
            rank: g.rank(),
            world: g.world_size(),
        })
    }

    pub fn role(&self) -> WriteRole {
        WriteRole::for_rank(self.shard().rank)
    }

    /// Plans the gradient buckets of `net` from its tensor table.
    pub fn plan(&mut self, net: Network, store: &ParamStore) -> Result<(), TrainError> {
        let tensors: Vec<_> = store
            .entries
            .iter()
            .map(|e| e.param.offset..e.param.offset + e.param.len)
            .collect();
        let plan = BucketPlan::new(&tensors, self.bucket_bytes).map_err(dist_err)?;
        self.plans.retain(|(n, _)| *n != net);
        self.plans.push((net, plan));
        Ok(())
    }

    /// Averages `grad` of `net` over the ranks, bucket by bucket in backward order.
    pub fn reduce(&self, net: Network, grad: &mut [f32]) -> Result<(), TrainError> {
        let Some(g) = self.group else { return Ok(()) };
        let plan = self
            .plans
            .iter()
            .find(|(n, _)| *n == net)
            .map(|(_, p)| p)
            .ok_or_else(|| {
                TrainError::Invalid(format!("no gradient buckets planned for {net:?}"))
            })?;
        // The CPU backward produces the whole gradient at once: every bucket is ready now.
        BucketSchedule::new(plan)
            .finish(grad, |_, bucket| g.all_reduce_mean(bucket))
            .map_err(dist_err)
    }

    /// Rank 0's buffers and counters to every rank (start of a run).
    pub fn broadcast(
        &self,
        bufs: &mut [&mut [f32]],
        counters: &mut [u64],
    ) -> Result<(), TrainError> {
        let Some(g) = self.group else { return Ok(()) };
        for b in bufs.iter_mut() {
            g.broadcast(b).map_err(dist_err)?;
        }
        let mut bytes: Vec<u8> = counters.iter().flat_map(|c| c.to_le_bytes()).collect();
        g.broadcast_bytes(&mut bytes).map_err(dist_err)?;
        if bytes.len() != counters.len() * 8 {
            return Err(TrainError::Invalid(
                "rank 0 sent another number of counters".into(),
            ));
        }
        for (c, b) in counters.iter_mut().zip(bytes.chunks_exact(8)) {
            *c = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        }
        Ok(())
    }

    /// At a checkpoint: every rank must hold the same state (else an error naming the ranks);
    /// then rank 0 runs `save`.
    pub fn checkpoint(
        &self,
        state: &[&[f32]],
        save: impl FnOnce() -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        if let Some(g) = self.group {
            g.check_identical("the parameters and optimiser state", fingerprint_f32(state))
                .map_err(dist_err)?;
        }
        self.role().run(save).map(|_| ())
    }

    fn mean(&self, v: &mut [f32]) -> Result<(), TrainError> {
        match self.group {
            Some(g) => g.all_reduce_mean(v).map_err(dist_err),
            None => Ok(()),
        }
    }

    /// The step's losses over the whole global batch (means of the ranks' means).
    pub fn mean_vae_log(&self, r: &mut VaeStepLog) -> Result<(), TrainError> {
        if self.group.is_none() {
            return Ok(());
        }
        let mut fields: Vec<&mut f32> = vec![&mut r.l1, &mut r.kl, &mut r.loss_g];
        fields.extend(
            [r.perceptual.as_mut(), r.gen_adv.as_mut(), r.disc.as_mut()]
                .into_iter()
                .flatten(),
        );
        let mut v: Vec<f32> = fields.iter().map(|x| **x).collect();
        self.mean(&mut v)?;
        fields.into_iter().zip(v).for_each(|(f, x)| *f = x);
        Ok(())
    }

    /// The step's loss over the whole global batch (the timesteps listed stay rank 0's).
    pub fn mean_diffusion_log(&self, r: &mut DiffusionStepLog) -> Result<(), TrainError> {
        let mut v = [r.loss];
        self.mean(&mut v)?;
        r.loss = v[0];
        Ok(())
    }
}
