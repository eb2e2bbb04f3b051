//! Name -> f32 tensor store the model builders read from (filled from a blob or any other source),
//! with shape checks that name the offending tensor.

use crate::error::RuntimeError;
use std::collections::HashMap;

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
