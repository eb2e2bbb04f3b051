//! `Blob::open` on inputs that are not plain blob files: `/dev/zero` (refused by its magic after
//! 8 bytes), a FIFO (refused by its type without opening it, so it cannot block), and a file
//! larger than the memory budget (refused with the byte count before it is read).

use ldm_io::Budget;
use ldm_weights::{Blob, BlobError};

#[test]
fn dev_zero_is_refused_by_its_magic() {
    let e = Blob::open("/dev/zero").unwrap_err();
    assert!(matches!(e, BlobError::BadMagic { .. }), "{e}");
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile_dir();
    let fifo = dir.join("model.blob");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let e = Blob::open(&fifo).unwrap_err();
    assert!(e.to_string().contains("FIFO"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_over_the_budget_is_refused_before_reading() {
    let dir = tempfile_dir();
    let path = dir.join("fixture.blob");
    ldm_test_support::write_fixture_blob(&path, &ldm_test_support::fixture_config());
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(Blob::open_within(&path, Budget::new(len)).is_ok());
    let e = Blob::open_within(&path, Budget::new(len - 1)).unwrap_err();
    assert!(e.to_string().contains(&format!("needs {len} bytes")), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory under the system temp dir (no tempfile dev-dependency in this crate).
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "ldm-weights-open-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
