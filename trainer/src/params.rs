//! The flat parameter buffer and its mirror gradient buffer, with the name table that maps each
//! tensor to a MONAI Generative 0.2.3 state-dict key.
//!
//! Memory convention (shared by every layer and model of this crate):
//! - all parameters of a model live in ONE `Vec<f32>` (`ParamStore::data`), each tensor a
//!   contiguous range in PyTorch's layout (conv weight `[out, in, kd, kh, kw]`, linear `[out, in]`);
//! - the gradients live in ONE `Vec<f32>` of the same length (`ParamStore::grad`), same offsets;
//! - a layer holds `Param`s (offset + length) into these buffers, reads weights from `&[f32]`
//!   and ACCUMULATES (`+=`) its parameter gradients into `&mut [f32]`; `zero_grad` clears them.

use thiserror::Error;

/// A tensor's place in the flat parameter (and gradient) buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub offset: usize,
    pub len: usize,
}

impl Param {
    /// The tensor's values inside a flat buffer laid out by the same store.
    #[inline]
    pub fn of<'a>(&self, buf: &'a [f32]) -> &'a [f32] {
        &buf[self.offset..self.offset + self.len]
    }
    /// The tensor's mutable values (or gradient) inside a flat buffer.
    #[inline]
    pub fn of_mut<'a>(&self, buf: &'a mut [f32]) -> &'a mut [f32] {
        &mut buf[self.offset..self.offset + self.len]
    }
}

/// One named tensor in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub param: Param,
}

/// Errors of loading named tensors into a store.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("parameter `{0}` is registered twice")]
    Duplicate(String),
    #[error("tensor `{name}` is missing from the source")]
    Missing { name: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor `{name}` holds {found} values, its shape {shape:?} needs {expected}")]
    Length { name: String, shape: Vec<usize>, expected: usize, found: usize },
    #[error("tensor `{name}` contains a non-finite value")]
    NonFinite { name: String },
    #[error("flat buffer has {found} values, the store needs {expected}")]
    FlatLength { expected: usize, found: usize },
}

/// Flat parameters + flat gradients + the name table.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    pub data: Vec<f32>,
    pub grad: Vec<f32>,
    pub entries: Vec<ParamEntry>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a zero-initialised tensor; names must be unique.
    pub fn add(&mut self, name: &str, shape: &[usize]) -> Result<Param, ParamError> {
        if self.entries.iter().any(|e| e.name == name) {
            return Err(ParamError::Duplicate(name.to_string()));
        }
        let len: usize = shape.iter().product();
        let param = Param { offset: self.data.len(), len };
        self.data.resize(self.data.len() + len, 0.0);
        self.grad.resize(self.grad.len() + len, 0.0);
        self.entries.push(ParamEntry { name: name.to_string(), shape: shape.to_vec(), param });
        Ok(param)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn zero_grad(&mut self) {
        self.grad.iter_mut().for_each(|g| *g = 0.0);
    }

    pub fn entry(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Values of the named tensor.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.entry(name).map(|e| e.param.of(&self.data))
    }

    /// Gradient of the named tensor.
    pub fn grad_of(&self, name: &str) -> Option<&[f32]> {
        self.entry(name).map(|e| e.param.of(&self.grad))
    }

    /// Fills every tensor from a source that yields `(shape, values)` by name; every tensor of the
    /// store must be present with the right shape and finite values. Extra source tensors are the
    /// caller's business (e.g. the unused `proj_attn` of bundle checkpoints).
    pub fn load_with<'a, F>(&mut self, mut source: F) -> Result<(), ParamError>
    where
        F: FnMut(&str) -> Option<(Vec<usize>, &'a [f32])>,
    {
        for e in &self.entries {
            let (shape, vals) =
                source(&e.name).ok_or_else(|| ParamError::Missing { name: e.name.clone() })?;
            if shape != e.shape {
                return Err(ParamError::Shape { name: e.name.clone(), expected: e.shape.clone(), found: shape });
            }
            if vals.len() != e.param.len {
                return Err(ParamError::Length {
                    name: e.name.clone(),
                    shape: e.shape.clone(),
                    expected: e.param.len,
                    found: vals.len(),
                });
            }
            if vals.iter().any(|v| !v.is_finite()) {
                return Err(ParamError::NonFinite { name: e.name.clone() });
            }
            e.param.of_mut(&mut self.data).copy_from_slice(vals);
        }
        Ok(())
    }

    /// Replaces all values from one flat buffer of the store's own layout (e.g. a checkpoint).
    pub fn load_flat(&mut self, flat: &[f32]) -> Result<(), ParamError> {
        if flat.len() != self.data.len() {
            return Err(ParamError::FlatLength { expected: self.data.len(), found: flat.len() });
        }
        self.data.copy_from_slice(flat);
        Ok(())
    }

    /// Every tensor as `(name, shape, values)`, in registration order (for export to a blob).
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &[usize], &[f32])> {
        self.entries.iter().map(move |e| (e.name.as_str(), e.shape.as_slice(), e.param.of(&self.data)))
    }
}
