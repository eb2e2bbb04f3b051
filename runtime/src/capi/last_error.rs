//! The per-thread last-error message behind `brats_ldm_last_error`.
//!
//! Each fallible entry point stores its outcome here: the message on failure, "" on success.
//! The pointer handed to C stays valid until the next store on the same thread. The buffer is
//! reused, so clearing it after a successful call never allocates (generate stays
//! allocation-free through the C ABI too).

use std::cell::RefCell;
use std::ffi::c_char;

thread_local! {
    /// The message's bytes plus a terminating NUL; empty means no message.
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Replace the calling thread's message. Interior NUL bytes (which C cannot see past) become
/// spaces, so this never fails.
pub fn set(message: &str) {
    // `try_with`: during thread teardown the slot may be gone; dropping the message is all we can do.
    let _ = LAST_ERROR.try_with(|slot| {
        let mut buf = slot.borrow_mut();
        buf.clear();
        buf.extend(message.bytes().map(|b| if b == 0 { b' ' } else { b }));
        buf.push(0);
    });
}

/// Clear the message (after a successful call); keeps the buffer's capacity.
pub fn clear() {
    let _ = LAST_ERROR.try_with(|slot| slot.borrow_mut().clear());
}

/// Pointer to the calling thread's message; "" if none (or during thread teardown).
pub fn get() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| {
            let buf = slot.borrow();
            if buf.is_empty() {
                c"".as_ptr()
            } else {
                buf.as_ptr().cast()
            }
        })
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
        set("short");
        assert_eq!(current(), "short");
        clear();
        assert_eq!(current(), "");
        set("");
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
