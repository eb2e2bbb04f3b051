//! Training steps: the VAE-GAN stage (autoencoder + patch discriminator) and the latent
//! diffusion stage, each a trainer object holding models, flat parameters, Adam state and the
//! step counter, with seeded counter-based randomness (see [`crate::init`]) so that a run
//! resumed from a checkpoint continues bit-exactly.
//!
//! Wiring a training loop (what `brats-ldm train` does):
//! - autoencoder: `VaeGanTrainer::new(VaeGanConfig, seed)` (or `VaeGanTrainer::resume(ckpt)`),
//!   then per batch `train_step(&images, Dims)` -> [`vae_gan::VaeStepLog`] (serde: one JSON line),
//!   `save(ckpt, extra)` every so often (atomic; `extra` = the loop's data cursor), and finally
//!   [`crate::export::export_blob`] with `autoencoder: Some((&t.ae, &t.ae_params))`;
//! - diffusion: rebuild the autoencoder (`AutoencoderKL::new` + [`crate::export::load_from_blob`]),
//!   encode batches with [`diffusion::encode_latents`], take `s = diffusion::scale_factor(&z)`
//!   from the first batch(es), `DiffusionTrainer::new(DiffusionConfig { scale_factor: s, .. })`,
//!   and per batch `train_step(&(z * s), Dims)`; export both networks with `scale_factor: s`
//!   (the runtime decodes `latent / s`).
//!
//! Every step validates its input (shape, finite values) before touching anything and returns
//! [`TrainError::NonFinite`] on a non-finite loss or gradient, counting only completed steps.
//! A diffusion step and the generator update are then not applied; in the VAE-GAN step the
//! discriminator updates come first (bundle order), so after such an error resume from the last
//! checkpoint.

// a step's share of a data-parallel batch
pub mod batch_part;
pub mod diffusion;
pub mod distributed;
// the order of training samples, a pure function of (seed, k)
mod order;
// what a run records in its checkpoints and folder
pub mod record;
pub mod run;
// the run folder and its log
mod run_dir;
pub mod setup;
pub mod vae_gan;
// reconstruction metrics and sample diversity (logged at checkpoints; used by `evaluate --model`)
pub mod validation;

use thiserror::Error;

use crate::checkpoint::CheckpointError;
use crate::layers::LayerError;
use crate::losses::LossError;
use crate::models::ModelError;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Loss(#[from] LossError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("step {step}: {what} is not finite; the update was not applied")]
    NonFinite { step: u64, what: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Metric(#[from] ldm_metrics::MetricError),
}

impl From<LayerError> for TrainError {
    fn from(e: LayerError) -> Self {
        TrainError::Model(ModelError::Layer(e))
    }
}

/// Names and shapes of a store's tensors, for checkpoint headers.
pub(crate) fn tensor_table(store: &crate::params::ParamStore) -> serde_json::Value {
    serde_json::Value::Array(
        store.entries.iter().map(|e| serde_json::json!({ "name": e.name, "shape": e.shape })).collect(),
    )
}

pub(crate) fn finite(step: u64, what: &'static str, v: f32) -> Result<f32, TrainError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(TrainError::NonFinite { step, what })
    }
}

pub(crate) fn all_finite(step: u64, what: &'static str, v: &[f32]) -> Result<(), TrainError> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(TrainError::NonFinite { step, what })
    }
}
