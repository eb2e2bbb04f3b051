//! The `extern "C"` entry points declared in include/brats_ldm.h. Each one runs its body inside
//! `entry`, which catches panics and turns the outcome into a status code and the thread's
//! last-error message; nothing here panics on caller input.

use super::handle::{self, Generator};
use super::last_error;
use super::map_error;
use super::options;
use super::status::*;
use super::types::*;
use crate::{Progress, Runtime};
use ldm_weights::Blob;
use std::any::Any;
use std::ffi::{c_char, c_void, CStr};
use std::mem::size_of;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Run one call: Ok -> BRATS_LDM_OK and "" as last error; Err or panic -> its code and message.
fn entry(body: impl FnOnce() -> Result<(), CError>) -> Status {
    let result = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => Err(internal_error(payload.as_ref())),
    };
    match result {
        Ok(()) => {
            last_error::clear();
            OK
        }
        Err(e) => {
            last_error::set(&e.message);
            e.code
        }
    }
}

fn internal_error(payload: &(dyn Any + Send)) -> CError {
    let what = if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    };
    CError::new(
        ERR_INTERNAL,
        format!("internal error (a bug in brats-ldm, please report): {what}"),
    )
}

/// Run an infallible query without letting a panic escape.
fn infallible<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

const VERSION: &CStr = {
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(s) => s,
        Err(_) => panic!("the crate version contains a NUL byte"),
    }
};

/// `const char *brats_ldm_version_string(void)`
#[no_mangle]
pub extern "C" fn brats_ldm_version_string() -> *const c_char {
    VERSION.as_ptr()
}

fn parse_version_part(s: &str, what: &str) -> Result<u32, CError> {
    s.parse()
        .map_err(|_| CError::new(ERR_INTERNAL, format!("crate version {what} `{s}` is not a number")))
}

/// `brats_ldm_status brats_ldm_version(uint32_t *major, uint32_t *minor, uint32_t *patch)`
///
/// # Safety
/// Each pointer is NULL or valid for a u32 write.
#[no_mangle]
pub unsafe extern "C" fn brats_ldm_version(major: *mut u32, minor: *mut u32, patch: *mut u32) -> Status {
    entry(|| {
        if major.is_null() || minor.is_null() || patch.is_null() {
            return Err(CError::null("major, minor or patch"));
        }
        let values = [
            parse_version_part(env!("CARGO_PKG_VERSION_MAJOR"), "major")?,
            parse_version_part(env!("CARGO_PKG_VERSION_MINOR"), "minor")?,
            parse_version_part(env!("CARGO_PKG_VERSION_PATCH"), "patch")?,
        ];
        // SAFETY: non-null, valid for writes by the caller's contract.
        unsafe {
            major.write(values[0]);
            minor.write(values[1]);
            patch.write(values[2]);
        }
        Ok(())
    })
}

/// `const char *brats_ldm_status_string(brats_ldm_status status)`
#[no_mangle]
pub extern "C" fn brats_ldm_status_string(status: Status) -> *const c_char {
    status_cstr(status)
}

/// `const char *brats_ldm_last_error(void)`
#[no_mangle]
pub extern "C" fn brats_ldm_last_error() -> *const c_char {
    infallible(c"".as_ptr(), last_error::get)
}

/// `brats_ldm_status brats_ldm_options_init(brats_ldm_options *options, size_t struct_size)`
///
/// # Safety
/// `options` is NULL or valid for writes of `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn brats_ldm_options_init(options: *mut BratsLdmOptions, struct_size: usize) -> Status {
    entry(|| {
        if options.is_null() {
            return Err(CError::null("options"));
        }
        // SAFETY: the caller's contract.
        unsafe { options::init(options.cast(), struct_size) }
    })
}

/// Shared tail of both create functions: options, runtime, generator, registration.
///
/// # Safety
/// `options` as for `options::read`; `out` non-null and valid for a pointer write.
unsafe fn create(
    blob: impl FnOnce() -> Result<Blob, CError>,
    options: *const BratsLdmOptions,
    out: *mut *mut BratsLdmGenerator,
) -> Result<(), CError> {
    // SAFETY: the caller's contract.
    let c_options = unsafe { options::read(options) }?;
    let rt_options = options::to_runtime(&c_options)?;
    let blob = blob()?;
    let config = blob.config();
    for (present, what) in [(config.unet.is_some(), "UNet"), (config.decoder.is_some(), "decoder")] {
        if !present {
            return Err(CError::new(
                ERR_INVALID_BLOB,
                format!("the blob has no {what}; generating volumes needs both the UNet and the decoder"),
            ));
        }
    }
    let runtime = Runtime::new(&blob, rt_options).map_err(|e| map_error::from_runtime(&e))?;
    drop(blob);
    let info = output_info(&runtime)?;
    let plan = plan_of(&runtime);
    let generator = Generator::new(runtime, info, plan);
    // SAFETY: non-null by the caller's contract.
    unsafe { out.write(handle::register(generator)) };
    Ok(())
}

/// Set `*out` to NULL first, so that it is NULL on every failure.
///
/// # Safety
/// `out` is NULL or valid for a pointer write.
unsafe fn reset_out(out: *mut *mut BratsLdmGenerator) -> Result<(), CError> {
    if out.is_null() {
        return Err(CError::null("out"));
    }
    // SAFETY: non-null, valid by the caller's contract.
    unsafe { out.write(std::ptr::null_mut()) };
    Ok(())
}

#[cfg(unix)]
fn path_from_c(path: &CStr) -> Result<PathBuf, CError> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes())))
}

#[cfg(not(unix))]
fn path_from_c(path: &CStr) -> Result<PathBuf, CError> {
    path.to_str()
        .map(PathBuf::from)
        .map_err(|_| CError::invalid("path is not valid UTF-8"))
}

/// `brats_ldm_status brats_ldm_create_from_path(const char *path, const brats_ldm_options *options, brats_ldm_generator **out)`
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `options` NULL or an initialised options struct;
/// `out` NULL or valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn brats_ldm_create_from_path(
    path: *const c_char,
    options: *const BratsLdmOptions,
    out: *mut *mut BratsLdmGenerator,
) -> Status {
    entry(|| {
        // SAFETY: the caller's contract (all three pointers).
        unsafe {
            reset_out(out)?;
            if path.is_null() {
                return Err(CError::null("path"));
            }
            let path = path_from_c(CStr::from_ptr(path))?;
            if path.as_os_str().is_empty() {
                return Err(CError::invalid("path is empty"));
            }
            create(|| Blob::open(&path).map_err(|e| map_error::from_blob(&e)), options, out)
        }
    })
}

/// `brats_ldm_status brats_ldm_create_from_bytes(const void *data, size_t len, const brats_ldm_options *options, brats_ldm_generator **out)`
///
/// # Safety
/// `data` is NULL or valid for reads of `len` bytes; `options` and `out` as for create_from_path.
#[no_mangle]
pub unsafe extern "C" fn brats_ldm_create_from_bytes(
    data: *const c_void,
    len: usize,
    options: *const BratsLdmOptions,
    out: *mut *mut BratsLdmGenerator,
) -> Status {
    entry(|| {
        // SAFETY: the caller's contract (all pointers).
        unsafe {
            reset_out(out)?;
            if data.is_null() {
                return Err(CError::null("data"));
            }
            if len == 0 {
                return Err(CError::new(
                    ERR_INVALID_BLOB,
                    "cannot load blob: len is 0 (an empty buffer is not a blob)",
                ));
            }
            let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
            create(
                || Blob::from_bytes(bytes.to_vec()).map_err(|e| map_error::from_blob(&e)),
                options,
                out,
            )
        }
    })
}

fn to_u32(v: usize, what: &str) -> Result<u32, CError> {
    u32::try_from(v).map_err(|_| CError::new(ERR_OUT_OF_MEMORY, format!("{what} {v} does not fit in 32 bits")))
}

fn output_info(rt: &Runtime) -> Result<BratsLdmOutputInfo, CError> {
    let shape = rt.output_shape();
    let latent = rt.latent_shape();
    let num_floats = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| CError::new(ERR_OUT_OF_MEMORY, format!("output shape {shape:?} overflows")))?;
    let geometry = rt.geometry();
    let mut orientation = [0 as c_char; 16];
    let code = geometry.orientation.as_bytes();
    if code.len() >= orientation.len() || code.contains(&0) {
        return Err(CError::new(
            ERR_INVALID_BLOB,
            format!(
                "blob orientation code {:?} does not fit brats_ldm_output_info.orientation",
                geometry.orientation
            ),
        ));
    }
    for (dst, &src) in orientation.iter_mut().zip(code) {
        *dst = src as c_char;
    }
    let mut shape32 = [0u32; 4];
    let mut latent32 = [0u32; 4];
    for i in 0..4 {
        shape32[i] = to_u32(shape[i], "output dimension")?;
        latent32[i] = to_u32(latent[i], "latent dimension")?;
    }
    Ok(BratsLdmOutputInfo {
        shape: shape32,
        latent_shape: latent32,
        num_floats: num_floats as u64,
        steps: to_u32(rt.timesteps().len(), "step count")?,
        spacing_mm: geometry.spacing_mm,
        intensity_range: geometry.intensity_range,
        orientation,
    })
}

fn plan_of(rt: &Runtime) -> BratsLdmPlan {
    let p = rt.plan();
    BratsLdmPlan {
        weight_bytes: p.weights_bytes as u64,
        arena_bytes: p.arena_bytes as u64,
        workspace_bytes: p.workspace_bytes as u64,
        state_bytes: p.state_bytes as u64,
        total_bytes: p.total_bytes as u64,
    }
}

/// Copy a query result to the caller: `min(out_size, size_of::<T>())` bytes, refusing sizes
/// below `min_size` (the first published layout of T).
///
/// # Safety
/// `out` is non-null and valid for writes of `out_size` bytes.
unsafe fn write_sized<T: Copy>(
    value: &T,
    out: *mut T,
    out_size: usize,
    min_size: usize,
    what: &str,
) -> Result<(), CError> {
    if out_size < min_size {
        return Err(CError::invalid(format!(
            "out_size is {out_size} but {what} needs at least {min_size} bytes: pass sizeof({what})"
        )));
    }
    let n = out_size.min(size_of::<T>());
    // SAFETY: T is a padding-free repr(C) struct (see types.rs); `out` holds out_size >= n bytes.
    unsafe { std::ptr::copy_nonoverlapping((value as *const T).cast::<u8>(), out.cast::<u8>(), n) };
    Ok(())
}

/// `brats_ldm_status brats_ldm_get_plan(const brats_ldm_generator *generator, brats_ldm_plan *out, size_t out_size)`
///
/// # Safety
/// `generator` is any pointer (checked against the registry); `out` NULL or valid for
/// `out_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn brats_ldm_get_plan(
    generator: *const BratsLdmGenerator,
    out: *mut BratsLdmPlan,
    out_size: usize,
) -> Status {
    entry(|| {
        // SAFETY: the caller's contract.
        unsafe {
            let lease = handle::acquire(generator)?;
            if out.is_null() {
                return Err(CError::null("out"));
            }
            write_sized(&lease.generator().plan, out, out_size, 40, "brats_ldm_plan")
        }
    })
}

/// `brats_ldm_status brats_ldm_get_output_info(const brats_ldm_generator *generator, brats_ldm_output_info *out, size_t out_size)`
///
/// # Safety
/// As for `brats_ldm_get_plan`.
#[no_mangle]
pub unsafe extern "C" fn brats_ldm_get_output_info(
    generator: *const BratsLdmGenerator,
    out: *mut BratsLdmOutputInfo,
    out_size: usize,
) -> Status {
    entry(|| {
        // SAFETY: the caller's contract.
        unsafe {
            let lease = handle::acquire(generator)?;
            if out.is_null() {
                return Err(CError::null("out"));
            }
            write_sized(&lease.generator().info, out, out_size, 80, "brats_ldm_output_info")
        }
    })
}

/// `brats_ldm_status brats_ldm_get_output_len(const brats_ldm_generator *generator, size_t *num_floats)`
///
/// # Safety
/// `generator` any pointer; `num_floats` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn brats_ldm_get_output_len(
    generator: *const BratsLdmGenerator,
    num_floats: *mut usize,
) -> Status {
    entry(|| {
        // SAFETY: the caller's contract.
        unsafe {
            let lease = handle::acquire(generator)?;
            if num_floats.is_null() {
                return Err(CError::null("num_floats"));
            }
            num_floats.write(lease.generator().info.num_floats as usize);
        }
        Ok(())
    })
}

/// Unwind payload used to leave `Runtime::generate` when the progress callback cancels.
struct Cancelled(BratsLdmProgress);

/// `brats_ldm_status brats_ldm_generate(brats_ldm_generator *generator, uint64_t seed, float *out, size_t out_len, brats_ldm_progress_fn progress, void *user_data)`
///
/// # Safety
/// `generator` any pointer; `out` NULL or valid for writes of `out_len` floats; `progress` NULL
/// or a function safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn brats_ldm_generate(
    generator: *mut BratsLdmGenerator,
    seed: u64,
    out: *mut f32,
    out_len: usize,
    progress: ProgressFn,
    user_data: *mut c_void,
) -> Status {
    entry(|| {
        // SAFETY: the registry check inside acquire.
        let mut lease = unsafe { handle::acquire(generator) }?;
        if out.is_null() {
            return Err(CError::null("out"));
        }
        if lease.is_poisoned() {
            return Err(CError::new(
                ERR_INTERNAL,
                "this generator hit an internal error in an earlier generate call; destroy it and create a new one",
            ));
        }
        let info = lease.generator().info;
        let needed = info.num_floats as usize;
        if out_len < needed {
            let [c, d, h, w] = info.shape;
            return Err(CError::new(
                ERR_BUFFER_TOO_SMALL,
                format!("out_len is {out_len} floats but one volume needs {needed} ({c}x{d}x{h}x{w})"),
            ));
        }
        if !out.is_aligned() {
            return Err(CError::invalid(format!(
                "out {out:p} is not aligned to 4 bytes (float)"
            )));
        }
        // SAFETY: non-null, aligned, and valid for out_len >= needed floats by the caller's contract.
        let out = unsafe { std::slice::from_raw_parts_mut(out, needed) };
        let total = info.steps;
        let mut report = |p: Progress| {
            let Some(callback) = progress else { return };
            let c_progress = match p {
                Progress::Step { index, total, timestep } => BratsLdmProgress {
                    stage: STAGE_SAMPLING,
                    step: index as u32,
                    total_steps: total as u32,
                    timestep: timestep as i32,
                },
                Progress::Decoding => BratsLdmProgress {
                    stage: STAGE_DECODING,
                    step: total,
                    total_steps: total,
                    timestep: -1,
                },
            };
            // SAFETY: the caller vouches that the callback may be called with user_data.
            if unsafe { callback(&c_progress, user_data) } != 0 {
                // Leaves Runtime::generate by unwinding (no panic hook runs); caught below.
                resume_unwind(Box::new(Cancelled(c_progress)));
            }
        };
        let runtime = lease.runtime();
        match catch_unwind(AssertUnwindSafe(|| runtime.generate(seed, out, &mut report))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(map_error::from_runtime(&e)),
            Err(payload) => match payload.downcast::<Cancelled>() {
                Ok(at) => Err(CError::new(
                    ERR_CANCELLED,
                    if at.0.stage == STAGE_DECODING {
                        "cancelled by the progress callback before decoding".to_string()
                    } else {
                        format!(
                            "cancelled by the progress callback at step {} of {} (timestep {})",
                            at.0.step, at.0.total_steps, at.0.timestep
                        )
                    },
                )),
                Err(other) => {
                    lease.poison();
                    Err(internal_error(other.as_ref()))
                }
            },
        }
    })
}

/// `brats_ldm_status brats_ldm_destroy(brats_ldm_generator *generator)`
///
/// # Safety
/// `generator` any pointer (checked against the registry).
#[no_mangle]
pub unsafe extern "C" fn brats_ldm_destroy(generator: *mut BratsLdmGenerator) -> Status {
    entry(|| {
        if generator.is_null() {
            return Ok(());
        }
        // SAFETY: the registry check inside destroy.
        unsafe { handle::destroy(generator) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: last_error::get always returns a valid NUL-terminated string.
        unsafe { CStr::from_ptr(brats_ldm_last_error()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_not_an_unwind() {
        assert_eq!(entry(|| panic!("boom {}", 42)), ERR_INTERNAL);
        assert!(last().contains("boom 42"), "{}", last());
        assert_eq!(entry(|| Ok(())), OK);
        assert_eq!(last(), "");
        assert_eq!(entry(|| Err(CError::invalid("options.x is bad"))), ERR_INVALID_ARGUMENT);
        assert_eq!(last(), "options.x is bad");
    }

    #[test]
    fn version_matches_the_crate() {
        let (mut a, mut b, mut c) = (0, 0, 0);
        assert_eq!(unsafe { brats_ldm_version(&mut a, &mut b, &mut c) }, OK);
        assert_eq!(format!("{a}.{b}.{c}"), env!("CARGO_PKG_VERSION"));
        let s = unsafe { CStr::from_ptr(brats_ldm_version_string()) };
        assert_eq!(s.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
