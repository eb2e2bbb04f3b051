//! The per-thread last-error message behind `brats_ldm_last_error`.
//!
//! Each fallible entry point stores its outcome here: the message on failure, "" on success.
//! The pointer handed to C stays valid until the next store on the same thread.

use std::cell::RefCell;
use std::ffi::{c_char, CString};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Replace the calling thread's message. Interior NUL bytes (which C cannot see past) become
/// spaces, so this never fails.
pub fn set(message: &str) {
    let bytes: Vec<u8> = message.bytes().map(|b| if b == 0 { b' ' } else { b }).collect();
    let c = CString::new(bytes).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; dropping the message is all we can do.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = c);
}

/// Clear the message (after a successful call).
pub fn clear() {
    let _ = LAST_ERROR.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        if !slot.as_bytes().is_empty() {
            *slot = CString::default();
        }
    });
}

/// Pointer to the calling thread's message; "" if none (or during thread teardown).
pub fn get() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn current() -> String {
        unsafe { CStr::from_ptr(get()) }.to_str().unwrap().to_string()
    }

    #[test]
    fn set_clear_and_nul_bytes() {
        assert_eq!(current(), "");
        set("bad\0thing");
        assert_eq!(current(), "bad thing");
        clear();
        assert_eq!(current(), "");
    }

    #[test]
    fn per_thread() {
        set("main thread error");
        let other = std::thread::spawn(current).join().unwrap();
        assert_eq!(other, "");
        assert_eq!(current(), "main thread error");
    }
}
