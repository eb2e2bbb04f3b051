//! NumPy arrays in: checks that an argument is a float32 `numpy.ndarray` of an accepted shape
//! with finite values, and copies it out (any strides) so the runtime can use it without the GIL.

use crate::errors::{Failure, Result};
use numpy::{
    dtype, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

/// A float32 array copied out of Python: its shape and values in C order.
pub struct F32Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// `value` as a float32 ndarray; `name` names the argument in errors.
pub fn f32_array(name: &str, value: &Bound<'_, PyAny>) -> Result<F32Array> {
    let py = value.py();
    let Ok(untyped) = value.cast::<PyUntypedArray>() else {
        let type_name = value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(Failure::invalid(format!(
            "{name} must be a numpy.ndarray of float32, got {type_name}"
        )));
    };
    let dt = untyped.dtype();
    if !dt.is_equiv_to(&dtype::<f32>(py)) {
        let found = dt
            .str()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(Failure::invalid(format!(
            "{name} must be float32, got dtype {found}: convert with .astype(numpy.float32) if that is what you mean"
        )));
    }
    let typed = untyped
        .cast::<PyArrayDyn<f32>>()
        .map_err(|e| Failure::invalid(format!("{name}: {e}")))?;
    let readonly = typed
        .try_readonly()
        .map_err(|e| Failure::invalid(format!("{name} cannot be read: {e}")))?;
    let view = readonly.as_array();
    let shape = view.shape().to_vec();
    // `as_slice` also accepts Fortran-contiguous arrays (memory order); only C order is logical order.
    let data: Vec<f32> = match readonly.as_slice() {
        Ok(s) if untyped.is_c_contiguous() => s.to_vec(),
        _ => view.iter().copied().collect(),
    };
    Ok(F32Array { shape, data })
}

/// A latent `[C, D, H, W]` or `[1, C, D, H, W]` with finite values, as the CLI's `--init-noise`.
pub fn latent(name: &str, value: &Bound<'_, PyAny>) -> Result<([usize; 4], Vec<f32>)> {
    let a = f32_array(name, value)?;
    let shape: [usize; 4] = match a.shape.as_slice() {
        [c, d, h, w] | [1, c, d, h, w] => [*c, *d, *h, *w],
        other => {
            return Err(Failure::invalid(format!(
                "{name}: shape {other:?} is not a latent: expected [C, D, H, W] or [1, C, D, H, W]"
            )))
        }
    };
    if shape.contains(&0) {
        return Err(Failure::invalid(format!(
            "{name}: shape {:?} has an empty dimension",
            a.shape
        )));
    }
    if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
        return Err(Failure::invalid(format!(
            "{name}: value {i} is not finite ({})",
            a.data[i]
        )));
    }
    Ok((shape, a.data))
}
