//! Status codes of the C ABI (mirrors the BRATS_LDM_* constants in include/brats_ldm.h) and the
//! error value that the entry points turn into a code plus a last-error message.

use std::ffi::c_char;

/// `brats_ldm_status`: 0 is success, everything else an error.
pub type Status = i32;

pub const OK: Status = 0;
pub const ERR_NULL_POINTER: Status = 1;
pub const ERR_INVALID_ARGUMENT: Status = 2;
pub const ERR_BUFFER_TOO_SMALL: Status = 3;
pub const ERR_IO: Status = 4;
pub const ERR_INVALID_BLOB: Status = 5;
pub const ERR_UNSUPPORTED: Status = 6;
pub const ERR_OUT_OF_MEMORY: Status = 7;
pub const ERR_CANCELLED: Status = 8;
pub const ERR_BUSY: Status = 9;
pub const ERR_INVALID_HANDLE: Status = 10;
pub const ERR_RUNTIME: Status = 11;
pub const ERR_INTERNAL: Status = 12;

/// Every status code with its C name, in code order (used by `brats_ldm_status_string` and by
/// the test that checks the header's constants).
pub const STATUS_NAMES: [(Status, &str); 13] = [
    (OK, "BRATS_LDM_OK"),
    (ERR_NULL_POINTER, "BRATS_LDM_ERR_NULL_POINTER"),
    (ERR_INVALID_ARGUMENT, "BRATS_LDM_ERR_INVALID_ARGUMENT"),
    (ERR_BUFFER_TOO_SMALL, "BRATS_LDM_ERR_BUFFER_TOO_SMALL"),
    (ERR_IO, "BRATS_LDM_ERR_IO"),
    (ERR_INVALID_BLOB, "BRATS_LDM_ERR_INVALID_BLOB"),
    (ERR_UNSUPPORTED, "BRATS_LDM_ERR_UNSUPPORTED"),
    (ERR_OUT_OF_MEMORY, "BRATS_LDM_ERR_OUT_OF_MEMORY"),
    (ERR_CANCELLED, "BRATS_LDM_ERR_CANCELLED"),
    (ERR_BUSY, "BRATS_LDM_ERR_BUSY"),
    (ERR_INVALID_HANDLE, "BRATS_LDM_ERR_INVALID_HANDLE"),
    (ERR_RUNTIME, "BRATS_LDM_ERR_RUNTIME"),
    (ERR_INTERNAL, "BRATS_LDM_ERR_INTERNAL"),
];

/// The same names as NUL-terminated statics, so a `const char *` can be handed out for ever.
const STATUS_CNAMES: [&[u8]; 13] = [
    b"BRATS_LDM_OK\0",
    b"BRATS_LDM_ERR_NULL_POINTER\0",
    b"BRATS_LDM_ERR_INVALID_ARGUMENT\0",
    b"BRATS_LDM_ERR_BUFFER_TOO_SMALL\0",
    b"BRATS_LDM_ERR_IO\0",
    b"BRATS_LDM_ERR_INVALID_BLOB\0",
    b"BRATS_LDM_ERR_UNSUPPORTED\0",
    b"BRATS_LDM_ERR_OUT_OF_MEMORY\0",
    b"BRATS_LDM_ERR_CANCELLED\0",
    b"BRATS_LDM_ERR_BUSY\0",
    b"BRATS_LDM_ERR_INVALID_HANDLE\0",
    b"BRATS_LDM_ERR_RUNTIME\0",
    b"BRATS_LDM_ERR_INTERNAL\0",
];

const UNKNOWN_STATUS: &[u8] = b"unknown status\0";

/// Static C string naming `status`.
pub fn status_cstr(status: Status) -> *const c_char {
    let name = usize::try_from(status)
        .ok()
        .and_then(|i| STATUS_CNAMES.get(i))
        .copied()
        .unwrap_or(UNKNOWN_STATUS);
    name.as_ptr().cast()
}

/// A failed call: the code returned to C and the message stored as the thread's last error.
#[derive(Debug, Clone, PartialEq)]
pub struct CError {
    pub code: Status,
    pub message: String,
}

impl CError {
    pub fn new(code: Status, message: impl Into<String>) -> Self {
        CError {
            code,
            message: message.into(),
        }
    }

    pub fn null(what: &str) -> Self {
        CError::new(ERR_NULL_POINTER, format!("{what} is NULL"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        CError::new(ERR_INVALID_ARGUMENT, message)
    }
}

/// A shared argument rule's refusal (`crate::arguments`): a bad value, or a model that cannot
/// do what was asked.
impl From<crate::arguments::ArgumentError> for CError {
    fn from(e: crate::arguments::ArgumentError) -> Self {
        match e {
            crate::arguments::ArgumentError::Invalid(m) => CError::invalid(m),
            crate::arguments::ArgumentError::Model(m) => CError::new(ERR_UNSUPPORTED, m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn names_match_codes_and_c_strings() {
        for (i, (code, name)) in STATUS_NAMES.iter().enumerate() {
            assert_eq!(*code as usize, i);
            let c = unsafe { CStr::from_ptr(status_cstr(*code)) };
            assert_eq!(c.to_str().unwrap(), *name);
        }
        let unknown = unsafe { CStr::from_ptr(status_cstr(-1)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown status");
        let unknown = unsafe { CStr::from_ptr(status_cstr(13)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown status");
    }
}
