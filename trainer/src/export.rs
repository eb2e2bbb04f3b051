//! Export of trained networks to the frozen blob (ldm-weights): builds the `ModelConfig` from the
//! trainers' configs and collects exactly the tensors `expected_tensors` lists, by name, from
//! the flat parameter stores (names are already the blob's contract). Also the way back:
//! [`load_from_blob`] initialises a store from a blob to fine-tune or continue training.

use std::path::Path;

use ldm_weights::names::expected_tensors;
use ldm_weights::tensor::TensorData;
use ldm_weights::writer::write_blob_file;
use ldm_weights::{DType, ModelConfig, OutputGeometry, Provenance, SchedulerConfig};
use thiserror::Error;

use crate::models::autoencoder::AutoencoderKL;
use crate::models::unet::DiffusionUnet;
use crate::params::ParamStore;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("the blob needs tensor `{0}`, which no trained network holds")]
    Missing(String),
    #[error("tensor `{name}`: trained shape {found:?}, blob contract {expected:?}")]
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("nothing to export: give an autoencoder, a UNet, or both")]
    Empty,
    #[error("scale factor {0} is not a positive finite number")]
    ScaleFactor(f32),
    #[error(transparent)]
    Blob(#[from] ldm_weights::error::BlobError),
    #[error("loading parameters: {0}")]
    Load(String),
}

/// What goes into a blob.
pub struct ExportSpec<'a> {
    /// The autoencoder and its parameters; its decoder is always exported.
    pub autoencoder: Option<(&'a AutoencoderKL, &'a ParamStore)>,
    /// Also export the encoder (lets the blob encode images, e.g. for further training).
    pub include_encoder: bool,
    pub unet: Option<(&'a DiffusionUnet, &'a ParamStore)>,
    pub scheduler: SchedulerConfig,
    pub scale_factor: f32,
    /// Default latent shape [C, D, H, W].
    pub latent_shape: [u32; 4],
    pub geometry: OutputGeometry,
    pub provenance: Provenance,
    pub dtype: DType,
}

/// The blob header's model configuration for `spec`.
pub fn model_config(spec: &ExportSpec) -> ModelConfig {
    ModelConfig {
        decoder: spec.autoencoder.map(|(ae, _)| ae.decoder_config.clone()),
        encoder: spec.autoencoder.filter(|_| spec.include_encoder).map(|(ae, _)| ae.encoder_config.clone()),
        unet: spec.unet.map(|(u, _)| u.config.clone()),
        scheduler: spec.scheduler.clone(),
        scale_factor: spec.scale_factor,
        latent_shape: spec.latent_shape,
        geometry: spec.geometry.clone(),
        provenance: spec.provenance.clone(),
    }
}

/// The blob's config and tensors (in contract order).
pub fn collect(spec: &ExportSpec) -> Result<(ModelConfig, Vec<TensorData>), ExportError> {
    if spec.autoencoder.is_none() && spec.unet.is_none() {
        return Err(ExportError::Empty);
    }
    if !(spec.scale_factor.is_finite() && spec.scale_factor > 0.0) {
        return Err(ExportError::ScaleFactor(spec.scale_factor));
    }
    let cfg = model_config(spec);
    let stores: Vec<&ParamStore> = spec.autoencoder.map(|(_, s)| s).into_iter().chain(spec.unet.map(|(_, s)| s)).collect();
    let mut out = Vec::new();
    for t in expected_tensors(&cfg) {
        let e = stores.iter().find_map(|s| s.entry(&t.name).map(|e| (e, *s))).ok_or_else(|| ExportError::Missing(t.name.clone()))?;
        let (entry, store) = e;
        if entry.shape != t.shape {
            return Err(ExportError::Shape { name: t.name.clone(), expected: t.shape.clone(), found: entry.shape.clone() });
        }
        out.push(TensorData::from_f32(t.name.clone(), t.shape.clone(), entry.param.of(&store.data), spec.dtype));
    }
    Ok((cfg, out))
}

/// Writes the blob atomically (the writer validates everything again).
pub fn export_blob(path: &Path, spec: &ExportSpec) -> Result<ModelConfig, ExportError> {
    let (cfg, tensors) = collect(spec)?;
    write_blob_file(path, &cfg, &tensors)?;
    Ok(cfg)
}

/// Fills every tensor of `store` from a blob (e.g. a converted MONAI bundle model or an earlier
/// export) to continue training or fine-tune from it. Every store tensor must be in the blob
/// with the same shape (f16/bf16 blobs are widened to f32); blob tensors the store does not
/// hold (e.g. the encoder when only a UNet is trained) are ignored.
pub fn load_from_blob(store: &mut ParamStore, blob: &ldm_weights::Blob) -> Result<(), ExportError> {
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::with_capacity(store.entries.len());
    for e in &store.entries {
        let t = blob.tensor(&e.name).ok_or_else(|| ExportError::Missing(e.name.clone()))?;
        if t.shape != e.shape.as_slice() {
            return Err(ExportError::Shape { name: e.name.clone(), expected: e.shape.clone(), found: t.shape.to_vec() });
        }
        owned.push((e.name.clone(), t.shape.to_vec(), t.to_f32_vec()));
    }
    store
        .load_with(|name| owned.iter().find(|(n, _, _)| n == name).map(|(_, s, v)| (s.clone(), v.as_slice())))
        .map_err(|e| ExportError::Load(e.to_string()))
}
