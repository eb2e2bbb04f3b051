//! What a training run records: the run folder's file names, the stage, and the loop's record in
//! each checkpoint (data, batch, shapes, the autoencoder a diffusion run was trained on), checked
//! on `--resume` so that a resumed run continues the same training.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::setup::DataSection;
use super::TrainError;

/// File names inside a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.ckpt";
pub const LOG_FILE: &str = "log.jsonl";
pub const CONFIG_FILE: &str = "config.json";
pub const LOSS_PNG: &str = "loss.png";

/// The two training stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Autoencoder,
    Diffusion,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Autoencoder => "autoencoder",
            Stage::Diffusion => "diffusion",
        }
    }
}

/// Where the training data came from, recorded in checkpoints (and from there in exported blobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    /// Free text: dataset path and kind, number of volumes.
    pub description: String,
    pub volumes: usize,
    pub preprocess: DataSection,
}

/// The loop's own state stored in each checkpoint's `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub stage: Stage,
    pub data: DataRecord,
    pub batch_size: usize,
    /// Autoencoder stage: the training patch. Diffusion stage: the latent [C, D, H, W].
    pub sample_shape: Vec<usize>,
    /// Diffusion stage: the autoencoder checkpoint the latents came from, its step, and a hash of
    /// its parameters (export checks that the same autoencoder is given).
    pub autoencoder: Option<AutoencoderRef>,
    /// Diffusion stage: latents sampled `mu + sigma * n` (true) or the means `mu` (false).
    #[serde(default)]
    pub sample_latents: bool,
    /// Processes of the data-parallel run that wrote the checkpoint (global batch
    /// `batch_size x world_size`); 1 in checkpoints written before this was recorded.
    #[serde(default = "one")]
    pub world_size: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoencoderRef {
    pub path: String,
    pub step: u64,
    pub params_hash: String,
}

/// FNV-1a over the bit patterns of a parameter buffer, as hex.
pub fn params_hash(p: &[f32]) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for v in p {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    format!("{h:016x}")
}

/// The recorded loop state must match this invocation's (same data, batch and shapes).
pub(super) fn check_record(ckpt: &Path, extra: &serde_json::Value, now: &RunRecord) -> Result<(), TrainError> {
    let saved: RunRecord = serde_json::from_value(extra.clone())
        .map_err(|e| TrainError::Invalid(format!("{}: no training-loop record in the checkpoint: {e}", ckpt.display())))?;
    if saved.stage != now.stage {
        return Err(TrainError::Invalid(format!("{}: is a {} checkpoint, not {}", ckpt.display(), saved.stage.name(), now.stage.name())));
    }
    if saved.data.volumes != now.data.volumes || saved.data.preprocess != now.data.preprocess {
        return Err(TrainError::Invalid(format!(
            "{}: the run was trained on {} volumes ({}); resuming with {} volumes ({}) would not continue it",
            ckpt.display(),
            saved.data.volumes,
            saved.data.description,
            now.data.volumes,
            now.data.description
        )));
    }
    if saved.batch_size != now.batch_size || saved.sample_shape != now.sample_shape || saved.sample_latents != now.sample_latents {
        return Err(TrainError::Invalid(format!(
            "{}: batch size, sample shape or latent sampling differs from the configuration",
            ckpt.display()
        )));
    }
    Ok(())
}

/// Reads the loop record of a checkpoint written by this driver.
pub fn read_record(extra: &serde_json::Value, ckpt: &Path) -> Result<RunRecord, TrainError> {
    serde_json::from_value(extra.clone())
        .map_err(|e| TrainError::Invalid(format!("{}: not written by `brats-ldm train` (no run record): {e}", ckpt.display())))
}
