//! Crash-safe file creation, from `ldm_io::atomic` (temp file in the destination directory,
//! fsync, rename; `stale_temps` finds what killed runs left).

pub use ldm_io::atomic::{ensure_writable_dir, stale_temps, write_atomic};
