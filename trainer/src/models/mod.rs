//! The trained networks, built as small "programs" of layer ops over one flat parameter store:
//! `AutoencoderKL` (encoder, sampling, decoder), `PatchDiscriminator`, `DiffusionModelUNet`.
//! Parameter names are the MONAI Generative 0.2.3 state-dict keys with a network prefix
//! (`autoencoder.`, `discriminator.`, `unet.`), i.e. the blob naming contract.

pub mod autoencoder;
pub mod blocks;
pub mod discriminator;
pub mod program;
pub mod unet;

use thiserror::Error;

use crate::layers::LayerError;
use crate::params::ParamError;

/// Checks that flat parameter (and gradient) buffers cover a model's tensors, which end at
/// `end` in the store that built it.
pub(crate) fn check_params(model: &'static str, end: usize, p: &[f32], g: Option<&[f32]>) -> Result<(), ModelError> {
    if p.len() < end || g.is_some_and(|g| g.len() < end) {
        return Err(ModelError::Input(format!(
            "{model}: parameter buffers hold {} / {} values, the model needs {end}",
            p.len(),
            g.map_or(0, |g| g.len())
        )));
    }
    Ok(())
}

/// Errors of building or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("invalid input: {0}")]
    Input(String),
}
