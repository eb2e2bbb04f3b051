//! Name -> f32 tensor store the model builders read from (filled from a blob or any other source),
//! with shape checks that name the offending tensor.

use crate::error::RuntimeError;
use std::borrow::Cow;
use std::collections::HashMap;

/// Where the model builders take tensors from: a `WeightStore`, or a `Blob` directly (its f32
/// tensors are borrowed in place, others converted one at a time, so loading never holds a
/// second full copy of the weights).
pub trait WeightSource {
    /// The tensor `name`, which must have exactly `shape` and finite values.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Cow<'_, [f32]>, RuntimeError>;
}

impl WeightSource for WeightStore {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Cow<'_, [f32]>, RuntimeError> {
        self.get(name, shape).map(Cow::Borrowed)
    }
}

impl WeightSource for ldm_weights::Blob {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Cow<'_, [f32]>, RuntimeError> {
        let view = ldm_weights::Blob::tensor(self, name).ok_or_else(|| RuntimeError::MissingTensor(name.to_string()))?;
        if view.shape != shape {
            return Err(RuntimeError::TensorShape { name: name.to_string(), got: view.shape.to_vec(), expected: shape.to_vec() });
        }
        let n = view.numel();
        let aligned = view.bytes.as_ptr().align_offset(std::mem::align_of::<f32>()) == 0;
        let data: Cow<'_, [f32]> = if view.dtype == ldm_weights::DType::F32 && aligned && cfg!(target_endian = "little") && view.bytes.len() == 4 * n {
            // SAFETY: aligned, in bounds (len checked), little-endian f32 bytes, any bit pattern is an f32.
            Cow::Borrowed(unsafe { std::slice::from_raw_parts(view.bytes.as_ptr() as *const f32, n) })
        } else {
            let mut v = vec![0f32; n];
            view.copy_to_f32(&mut v).map_err(|e| RuntimeError::TensorRead(name.to_string(), e.to_string()))?;
            Cow::Owned(v)
        };
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(RuntimeError::TensorRead(name.to_string(), format!("element {i} is not finite")));
        }
        Ok(data)
    }
}

#[derive(Debug, Default, Clone)]
pub struct WeightStore {
    map: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl WeightStore {
    pub fn new() -> WeightStore {
        WeightStore::default()
    }

    /// Adds a tensor; fails when the data length does not match the shape.
    pub fn insert(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) -> Result<(), RuntimeError> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or(RuntimeError::Overflow("tensor size"))?;
        if n != data.len() {
            return Err(RuntimeError::BufferSize { what: "tensor data", got: data.len(), expected: n });
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(RuntimeError::TensorRead(name.to_string(), format!("element {i} is not finite")));
        }
        self.map.insert(name.to_string(), (shape, data));
        Ok(())
    }

    /// Every tensor of a blob, converted to f32.
    pub fn from_blob(blob: &ldm_weights::Blob) -> Result<WeightStore, RuntimeError> {
        let mut store = WeightStore::new();
        for info in blob.tensors() {
            let view = blob.tensor(&info.name).ok_or_else(|| RuntimeError::MissingTensor(info.name.clone()))?;
            let mut data = vec![0f32; view.numel()];
            view.copy_to_f32(&mut data).map_err(|e| RuntimeError::TensorRead(info.name.clone(), e.to_string()))?;
            store.insert(&info.name, info.shape.clone(), data)?;
        }
        Ok(store)
    }

    /// Random weights for every tensor `cfg` needs (for benchmarks and memory measurements):
    /// weights ~ N(0, 1/fan_in), biases ~ 0.02 N(0,1), norm scales 1 + 0.1 N(0,1), from Philox.
    pub fn random(cfg: &ldm_weights::ModelConfig, seed: u64) -> Result<WeightStore, RuntimeError> {
        let mut store = WeightStore::new();
        let mut offset = 0u64;
        for spec in ldm_weights::names::expected_tensors(cfg) {
            let n = spec.shape.iter().product::<usize>();
            let mut data = vec![0f32; n];
            crate::philox::philox_normal(seed, offset, &mut data);
            offset += n as u64;
            let is_norm = spec.name.contains("norm") || (spec.shape.len() == 1 && spec.name.ends_with(".weight"));
            let scale = if spec.shape.len() >= 2 {
                1.0 / (spec.shape[1..].iter().product::<usize>() as f32).sqrt()
            } else if is_norm && spec.name.ends_with(".weight") {
                0.1
            } else {
                0.02
            };
            let base = if is_norm && spec.name.ends_with(".weight") && spec.shape.len() == 1 { 1.0 } else { 0.0 };
            data.iter_mut().for_each(|v| *v = base + *v * scale);
            store.insert(&spec.name, spec.shape.clone(), data)?;
        }
        Ok(store)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&[f32], RuntimeError> {
        let (s, d) = self.map.get(name).ok_or_else(|| RuntimeError::MissingTensor(name.to_string()))?;
        if s.as_slice() != shape {
            return Err(RuntimeError::TensorShape { name: name.to_string(), got: s.clone(), expected: shape.to_vec() });
        }
        Ok(d)
    }
}
