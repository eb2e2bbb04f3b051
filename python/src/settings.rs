//! The Python-side conversion of `Model(...)` and `Model.generate(...)` arguments: integer and
//! float arguments taken from Python objects (a bool or a non-integer refused, ranges checked),
//! with the CLI's messages in Python's spelling. The rules shared with the CLI (device,
//! precision, sampler and eta, step count, latent shape) are `ldm_runtime::arguments`', called
//! with `Spelling::Python`.

use crate::errors::{Failure, Result};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

/// An integer argument in `min..=u64::MAX`: a bool or a non-integer is refused, a value out of
/// range is an `InvalidArgument` naming the argument.
pub fn int_arg(name: &str, value: &Bound<'_, PyAny>, min: u64) -> Result<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        let type_name = value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(Failure::invalid(format!(
            "{name} must be an int, got {type_name}"
        )));
    }
    match value.extract::<u64>() {
        Ok(v) if v >= min => Ok(v),
        _ => Err(Failure::invalid(format!(
            "{name} must be an integer in {min}..=18446744073709551615, got {value}"
        ))),
    }
}

/// An optional integer argument that must fit in `usize`.
pub fn opt_usize_arg(
    name: &str,
    value: Option<&Bound<'_, PyAny>>,
    min: u64,
) -> Result<Option<usize>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => {
            if min == 1 && v.is_instance_of::<PyInt>() && v.extract::<i64>().is_ok_and(|n| n < 1) {
                return Err(Failure::invalid(format!("{name} must be at least 1")));
            }
            let n = int_arg(name, v, min)?;
            usize::try_from(n).map(Some).map_err(|_| {
                Failure::invalid(format!(
                    "{name} {n} does not fit this machine's address size"
                ))
            })
        }
    }
}

/// An optional float argument (`eta`): any real number is taken, range checks follow.
pub fn opt_f32_arg(name: &str, value: Option<&Bound<'_, PyAny>>) -> Result<Option<f32>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) if v.is_instance_of::<PyBool>() => Err(Failure::invalid(format!(
            "{name} must be a number, got bool"
        ))),
        Some(v) => v
            .extract::<f64>()
            .map(|x| Some(x as f32))
            .map_err(|_| Failure::invalid(format!("{name} must be a number, got {v}"))),
    }
}
