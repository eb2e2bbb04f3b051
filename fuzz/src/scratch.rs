//! Input files for readers whose entry point takes a path (NIfTI, checkpoints, configs, the batch
//! job's folder): one directory per process under `$TMPDIR` (`ldm-fuzz-<pid>`), files rewritten
//! for every input.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's scratch directory, created on first use.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("ldm-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch directory can be created");
        d
    })
}

/// A fresh empty subdirectory `name` of the scratch directory (emptied if it exists).
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = dir().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch subdirectory can be created");
    d
}

/// Writes `bytes` to the scratch file `name` and returns its path.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir().join(name);
    std::fs::write(&p, bytes).expect("scratch file can be written");
    p
}

/// When `LDM_FUZZ_DUMP` names a directory, a structure-aware target stores the file it built
/// there (as `name`), so a finding can be kept as a complete file for the regression tests.
pub fn dump(name: &str, bytes: &[u8]) {
    if let Some(d) = std::env::var_os("LDM_FUZZ_DUMP") {
        let _ = std::fs::create_dir_all(&d);
        let _ = std::fs::write(Path::new(&d).join(name), bytes);
    }
}
