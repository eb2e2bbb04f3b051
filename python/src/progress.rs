//! Progress and interruption while the runtime computes without the GIL: before each sampling
//! step and before decoding, the GIL is taken back briefly to check for pending signals (Ctrl-C
//! raises `KeyboardInterrupt` there) and to call the user's `progress(step, total)`. An
//! exception from either, or `progress` returning `False`, leaves the runtime by unwinding with
//! a private payload that is caught here, as the C ABI does for its cancelling callback (the
//! runtime calls progress on the calling thread between steps, never from its worker pool, so
//! no worker holds borrowed state; the next call starts from fresh noise).

use crate::errors::{Failure, Kind};
use ldm_runtime::Progress;
use pyo3::prelude::*;
use pyo3::types::PyBool;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Why a computation stopped early.
pub enum Stop {
    /// An exception from the progress callback or a signal handler (`KeyboardInterrupt`).
    Raised(PyErr),
    /// The callback returned `False`.
    Cancelled(Failure),
}

impl From<Stop> for PyErr {
    fn from(s: Stop) -> PyErr {
        match s {
            Stop::Raised(e) => e,
            Stop::Cancelled(f) => f.into(),
        }
    }
}

/// Unwind payload; never escapes `run`.
struct Unwind(Stop);

/// (completed steps, total) of a runtime progress event: `Step { index }` comes before step
/// `index` runs, `Decoding` after the last step.
fn counts(p: Progress, total: usize) -> (usize, usize) {
    match p {
        Progress::Step { index, total, .. } => (index, total),
        Progress::Decoding => (total, total),
    }
}

/// Checks signals and calls `callback`; an error or a `False` stops the computation.
fn report(callback: Option<&Py<PyAny>>, step: usize, total: usize) -> Result<(), Stop> {
    Python::attach(|py| {
        py.check_signals().map_err(Stop::Raised)?;
        let Some(cb) = callback else { return Ok(()) };
        let result = cb.call1(py, (step, total)).map_err(Stop::Raised)?;
        let result = result.bind(py);
        if result.is_instance_of::<PyBool>() && !result.is_truthy().unwrap_or(true) {
            let message = if step == total {
                "cancelled by the progress callback before decoding".to_string()
            } else {
                format!("cancelled by the progress callback at step {step} of {total}")
            };
            return Err(Stop::Cancelled(Failure::new(Kind::Cancelled, message)));
        }
        Ok(())
    })
}

/// Runs `compute` (which drives the runtime with the progress function it is given) and turns
/// a stop requested from Python into `Err(Stop)`. `total` is the number of sampling steps.
/// Must be called without the GIL held by this thread's caller frames being needed (inside
/// `Python::detach`).
pub fn run<R>(
    callback: Option<&Py<PyAny>>,
    total: usize,
    compute: impl FnOnce(&mut dyn FnMut(Progress)) -> R,
) -> Result<R, Stop> {
    let mut on_progress = |p: Progress| {
        let (step, total) = counts(p, total);
        if let Err(stop) = report(callback, step, total) {
            // Leaves the runtime by unwinding (no panic hook runs); caught below.
            resume_unwind(Box::new(Unwind(stop)));
        }
    };
    match catch_unwind(AssertUnwindSafe(|| compute(&mut on_progress))) {
        Ok(r) => Ok(r),
        Err(payload) => match payload.downcast::<Unwind>() {
            Ok(u) => Err(u.0),
            // A real panic: let it continue (PyO3 turns it into PanicException at the boundary).
            Err(other) => resume_unwind(other),
        },
    }
}
