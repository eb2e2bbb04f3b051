//! Layers with forward and backward side by side (llm.c style, no autograd).
//!
//! Memory convention:
//! - activations are plain `Vec<f32>` in NCDHW row-major order described by a [`Dims`];
//!   token-major tensors (attention, linear) are `[rows, features]` row-major;
//! - a layer's `forward` does NOT keep its input: the caller (a model block) saves the
//!   activations it will need and passes them back to `backward` explicitly, together with any
//!   small statistics the forward returned (e.g. [`norm::NormStats`]);
//! - parameters are read from the model's flat parameter buffer through [`crate::params::Param`]
//!   ranges, and parameter gradients are ACCUMULATED into the mirror flat gradient buffer;
//! - `backward` returns the gradient of the layer's input as a fresh `Vec<f32>`.
//!
//! Every layer checks the lengths of the slices it is given and returns [`LayerError`] on a
//! mismatch instead of panicking.

pub mod act;
pub mod attention;
pub mod concat;
pub mod conv3d;
pub mod gemm;
pub mod linear;
pub mod norm;
pub mod timestep;
pub mod upsample;

use thiserror::Error;

/// Shape of an NCDHW activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub n: usize,
    pub c: usize,
    pub d: usize,
    pub h: usize,
    pub w: usize,
}

impl Dims {
    pub fn new(n: usize, c: usize, d: usize, h: usize, w: usize) -> Self {
        Dims { n, c, d, h, w }
    }
    /// Voxels per channel.
    pub fn spatial(&self) -> usize {
        self.d * self.h * self.w
    }
    /// Total number of values.
    pub fn numel(&self) -> usize {
        self.n * self.c * self.spatial()
    }
    pub fn with_c(&self, c: usize) -> Self {
        Dims { c, ..*self }
    }
    pub fn as_array(&self) -> [usize; 5] {
        [self.n, self.c, self.d, self.h, self.w]
    }
}

/// A layer was handed data that does not fit its configuration.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LayerError {
    #[error("{layer}: {what} has {found} values, expected {expected}")]
    Length { layer: &'static str, what: &'static str, expected: usize, found: usize },
    #[error("{layer}: input has {found} channels, expected {expected}")]
    Channels { layer: &'static str, expected: usize, found: usize },
    #[error("{layer}: {msg}")]
    Config { layer: &'static str, msg: String },
}

/// Checks a slice length, naming the layer and the slice on failure.
pub(crate) fn check_len(layer: &'static str, what: &'static str, got: usize, expected: usize) -> Result<(), LayerError> {
    if got != expected {
        return Err(LayerError::Length { layer, what, expected, found: got });
    }
    Ok(())
}
