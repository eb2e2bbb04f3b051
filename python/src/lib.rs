//! `brats_ldm._native`: the extension module behind the `brats_ldm` package. `Model` (model.rs)
//! generates volumes; `save_nifti` writes one; `inspect_json` describes a blob; `convert` turns
//! MONAI checkpoints into a blob; the Python half
//! (`brats_ldm/__init__.py`) defines the exception classes and re-exports everything.

mod arrays;
mod conversion;
mod errors;
mod files;
mod inspect;
mod model;
mod progress;
mod settings;

use errors::{Failure, Kind};
use files::Format;
use ldm_io::nifti::{ImageHeader, XFORM_ALIGNED_ANAT};
use pyo3::prelude::*;
use std::path::PathBuf;

/// Writes `volume` ([C, D, H, W] or [D, H, W] float32) as NIfTI-1 (`.nii` or `.nii.gz`) with the
/// 4x4 voxel-to-world `affine`, atomically, with the header and voxel order the CLI writes.
#[pyfunction]
#[pyo3(signature = (path, volume, affine, description=""))]
fn save_nifti(
    py: Python<'_>,
    path: PathBuf,
    volume: &Bound<'_, PyAny>,
    affine: &Bound<'_, PyAny>,
    description: &str,
) -> PyResult<()> {
    let format = match Format::of_path(&path) {
        Some(f @ (Format::Nii | Format::NiiGz)) => f,
        _ => {
            return Err(Failure::invalid(format!(
                "{}: a NIfTI file name must end in .nii or .nii.gz",
                path.display()
            ))
            .into())
        }
    };
    let a = arrays::f32_array("volume", volume)?;
    let shape: [usize; 4] = match a.shape.as_slice() {
        [d, h, w] => [1, *d, *h, *w],
        [c, d, h, w] => [*c, *d, *h, *w],
        other => {
            return Err(Failure::invalid(format!(
                "volume: shape {other:?} is not a volume: expected [C, D, H, W] or [D, H, W]"
            ))
            .into())
        }
    };
    let rows: Vec<Vec<f64>> = affine
        .extract()
        .map_err(|_| Failure::invalid("affine must be a 4x4 array of numbers"))?;
    if rows.len() != 4 || rows.iter().any(|r| r.len() != 4) {
        return Err(Failure::invalid(format!(
            "affine must be 4x4, got {} rows of lengths {:?}",
            rows.len(),
            rows.iter().map(Vec::len).collect::<Vec<_>>()
        ))
        .into());
    }
    if rows[3] != [0.0, 0.0, 0.0, 1.0] {
        return Err(Failure::invalid(format!(
            "affine's last row must be [0, 0, 0, 1], got {:?}",
            rows[3]
        ))
        .into());
    }
    let mut aff = [[0.0f64; 4]; 3];
    for (dst, src) in aff.iter_mut().zip(&rows) {
        dst.copy_from_slice(src);
    }
    files::check_affine(&aff)
        .map_err(|e| Failure::invalid(format!("cannot write {}: {e}", path.display())))?;
    let [c, d, h, w] = shape;
    let header = ImageHeader {
        dims: [d, h, w],
        channels: c,
        affine: aff,
        xform_code: XFORM_ALIGNED_ANAT,
        descrip: description.to_string(),
    };
    header
        .to_bytes::<f32>()
        .map_err(|e| Failure::invalid(format!("cannot write {}: {e}", path.display())))?;
    py.detach(|| files::write(&path, format, &header, &a.data))
        .map_err(|e| Failure::new(Kind::Output, e))?;
    Ok(())
}

/// The `brats-ldm inspect --json` report of a blob, as JSON text.
#[pyfunction]
#[pyo3(signature = (path, tensors=false))]
fn inspect_json(py: Python<'_>, path: PathBuf, tensors: bool) -> PyResult<String> {
    Ok(py.detach(|| inspect::report_json(&path, tensors))?)
}

/// MONAI checkpoints -> a weight blob at `out`, as `brats-ldm convert` does; returns what was
/// written (tensors, bytes, checksum, dtype) and the lines the CLI prints (`log`).
#[pyfunction]
#[pyo3(signature = (out, *, autoencoder=None, unet=None, bundle=None, config=None, preset=None, dtype="f32",
    scale_factor=None, latent_shape=None, key=None, attention_output_projection=false,
    decoder_only=false))]
#[allow(clippy::too_many_arguments)]
fn convert<'py>(
    py: Python<'py>,
    out: PathBuf,
    autoencoder: Option<PathBuf>,
    unet: Option<PathBuf>,
    bundle: Option<PathBuf>,
    config: Option<PathBuf>,
    preset: Option<String>,
    dtype: &str,
    scale_factor: Option<f32>,
    latent_shape: Option<Vec<i64>>,
    key: Option<String>,
    attention_output_projection: bool,
    decoder_only: bool,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let req = conversion::Request {
        out: out.clone(),
        autoencoder,
        unet,
        config,
        bundle,
        preset,
        dtype: dtype.to_string(),
        scale_factor,
        latent_shape,
        key,
        attention_output_projection,
        decoder_only,
    };
    let done = py.detach(|| conversion::run(req))?;
    let d = pyo3::types::PyDict::new(py);
    d.set_item("path", out.display().to_string())?;
    d.set_item("tensors", done.tensors)?;
    d.set_item("bytes", done.bytes)?;
    d.set_item("checksum", format!("{:016x}", done.checksum))?;
    d.set_item("dtype", done.dtype.name())?;
    d.set_item("log", done.log)?;
    Ok(d)
}

/// Path of the default model ($BRATS_LDM_MODEL, else the source tree's
/// weights/default/brats-ldm-default.blob when it exists), or None.
#[pyfunction]
fn default_model_path() -> Option<String> {
    model::default_model_path().map(|p| p.display().to_string())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::Model>()?;
    m.add_function(wrap_pyfunction!(save_nifti, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_json, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(default_model_path, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
