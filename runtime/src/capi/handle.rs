//! Generator handles: the heap object behind `brats_ldm_generator *`, the registry of live
//! handles (so a destroyed or foreign pointer is refused before it is dereferenced), and the
//! busy flag that makes an overlapping call return BRATS_LDM_ERR_BUSY.
//!
//! Limits (also in the header): a stale pointer whose address was reused by a later create is
//! indistinguishable from the new generator; the magic field only catches a live generator whose
//! memory the caller overwrote.

use super::status::{CError, ERR_BUSY, ERR_INVALID_HANDLE};
use super::types::{BratsLdmGenerator, BratsLdmOutputInfo, BratsLdmPlan};
use crate::Runtime;
use std::cell::UnsafeCell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// "BRATSLDM" in memory order: marks a live generator.
const MAGIC: u64 = u64::from_le_bytes(*b"BRATSLDM");

/// Addresses of every generator created and not yet destroyed.
static LIVE: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<usize>> {
    // Nothing panics while holding the lock, but never let poisoning turn into a panic here.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// One loaded model: the runtime plus what the queries report, computed once at creation.
pub struct Generator {
    magic: u64,
    busy: AtomicBool,
    /// Set when a generate call panicked: the runtime's buffers may be half-written.
    poisoned: AtomicBool,
    runtime: UnsafeCell<Runtime>,
    pub info: BratsLdmOutputInfo,
    pub plan: BratsLdmPlan,
}

// The runtime is only reached through a `Lease`, which holds the busy flag, so at most one
// thread touches it at a time; moving it between threads needs `Runtime: Send`, checked here.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Runtime>();
};
// SAFETY: see above: all access to `runtime` is serialised by `busy` (acquire/release).
unsafe impl Sync for Generator {}

impl Generator {
    pub fn new(runtime: Runtime, info: BratsLdmOutputInfo, plan: BratsLdmPlan) -> Box<Generator> {
        Box::new(Generator {
            magic: MAGIC,
            busy: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            runtime: UnsafeCell::new(runtime),
            info,
            plan,
        })
    }
}

/// Hand a new generator to C.
pub fn register(generator: Box<Generator>) -> *mut BratsLdmGenerator {
    let ptr = Box::into_raw(generator);
    live().insert(ptr as usize);
    ptr.cast()
}

/// Exclusive use of a generator for the duration of one call.
pub struct Lease {
    generator: *const Generator,
}

impl Lease {
    pub fn generator(&self) -> &Generator {
        // SAFETY: a lease exists only for a registered generator, and destroy refuses to free a
        // generator whose busy flag is set, which this lease holds until it is dropped.
        unsafe { &*self.generator }
    }

    pub fn runtime(&mut self) -> &mut Runtime {
        // SAFETY: as in `generator`, and the busy flag makes this the only reference.
        unsafe { &mut *(*self.generator).runtime.get() }
    }

    pub fn is_poisoned(&self) -> bool {
        self.generator().poisoned.load(Ordering::Relaxed)
    }

    pub fn poison(&self) {
        self.generator().poisoned.store(true, Ordering::Relaxed);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.generator().busy.store(false, Ordering::Release);
    }
}

/// Check `ptr` against the registry and the magic, then take its busy flag.
///
/// # Safety
/// None beyond what the registry guarantees: `ptr` is dereferenced only if it is registered.
pub unsafe fn acquire(ptr: *const BratsLdmGenerator) -> Result<Lease, CError> {
    if ptr.is_null() {
        return Err(CError::null("generator"));
    }
    let registry = live();
    let generator = checked(&registry, ptr)?;
    if generator
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return Err(busy_error());
    }
    drop(registry);
    Ok(Lease { generator })
}

fn busy_error() -> CError {
    CError::new(
        ERR_BUSY,
        "generator is busy: another call on it is in progress (a generator is not re-entrant; \
         use one generator per thread, and do not call it from its own progress callback)",
    )
}

/// The generator behind a registered pointer, with its magic checked. Needs the registry lock.
fn checked<'a>(
    registry: &MutexGuard<'static, BTreeSet<usize>>,
    ptr: *const BratsLdmGenerator,
) -> Result<&'a Generator, CError> {
    if !registry.contains(&(ptr as usize)) {
        return Err(CError::new(
            ERR_INVALID_HANDLE,
            format!("{ptr:p} is not a live generator (already destroyed, or never created by brats_ldm_create_*)"),
        ));
    }
    // SAFETY: registered pointers come from Box::into_raw and are removed before being freed.
    let generator = unsafe { &*ptr.cast::<Generator>() };
    if generator.magic != MAGIC {
        return Err(CError::new(
            ERR_INVALID_HANDLE,
            format!("generator {ptr:p} is corrupt (its magic field was overwritten)"),
        ));
    }
    Ok(generator)
}

/// Unregister and free a generator, unless it is in use.
///
/// # Safety
/// None beyond what the registry guarantees (see `acquire`).
pub unsafe fn destroy(ptr: *mut BratsLdmGenerator) -> Result<(), CError> {
    let mut registry = live();
    let generator = checked(&registry, ptr)?;
    if generator
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return Err(busy_error());
    }
    registry.remove(&(ptr as usize));
    drop(registry);
    // SAFETY: the pointer came from Box::into_raw in `register`; it is no longer registered, so
    // no other call can reach it, and we hold its busy flag, so no call is using it.
    drop(unsafe { Box::from_raw(ptr.cast::<Generator>()) });
    Ok(())
}
