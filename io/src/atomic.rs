//! Crash-safe file creation: write to a hidden temporary file in the destination directory,
//! flush it to disk, then rename it over the final name, so a file under its final name is
//! always complete. A killed job leaves at most `.NAME.PID.tmp` files behind, which
//! `stale_temps` finds so that the next run can delete them.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Creates `dir/name` atomically with the bytes `fill` writes. On any error the temporary file
/// is removed and the final name is untouched.
pub fn write_atomic<F>(dir: &Path, name: &str, fill: F) -> std::io::Result<PathBuf>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let tmp = temp_path(dir, name);
    let result = (|| {
        let create = || OpenOptions::new().write(true).create_new(true).open(&tmp);
        let file = match create() {
            // Left by a killed process that had our pid: no live process can own it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp)?;
                create()?
            }
            other => other?,
        };
        let mut w = BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let dest = dir.join(name);
        fs::rename(&tmp, &dest)?;
        // Make the rename itself durable; some filesystems refuse to fsync a directory.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Temporary files that interrupted runs left in `dir` (`.NAME.PID.tmp`), grouped by the final
/// `NAME` they were meant to become. One directory scan, whatever the batch size.
pub fn stale_temps(dir: &Path) -> std::io::Result<HashMap<String, Vec<PathBuf>>> {
    let mut out: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(s) = file_name.to_str() else {
            continue;
        };
        let Some(inner) = s.strip_prefix('.').and_then(|r| r.strip_suffix(".tmp")) else {
            continue;
        };
        let Some((name, pid)) = inner.rsplit_once('.') else {
            continue;
        };
        if !name.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            out.entry(name.to_string()).or_default().push(entry.path());
        }
    }
    Ok(out)
}

/// Creates the file `path` atomically (`write_atomic` in its parent directory, which must exist).
pub fn write_file<F>(path: &Path, fill: F) -> std::io::Result<PathBuf>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: an output needs a UTF-8 file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    write_atomic(dir, name, fill)
}

/// `write_file` with the bytes given.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    write_file(path, |w| w.write_all(bytes))
}

/// Checks early that files can be created in `dir` (creating the directory if needed), so that
/// an unwritable destination fails before any expensive work.
pub fn ensure_writable_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".brats-ldm-write-probe.{}.tmp", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_cleans_up_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_atomic(dir.path(), "a.bin", |w| w.write_all(b"hello")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        let err = write_atomic(dir.path(), "b.bin", |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["a.bin".to_string()]);
    }

    #[test]
    fn write_file_uses_the_parent_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        write_bytes(&p, b"{}").unwrap();
        write_bytes(&p, b"[]").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"[]");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_bytes(&dir.path().join("missing/x"), b"").is_err());
        assert!(write_bytes(Path::new("/"), b"").is_err());
    }

    #[test]
    fn stale_temps_are_found_by_final_name() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            ".x.nii.gz.123.tmp",
            ".x.nii.gz.9.tmp",
            ".x.nii.gz.tmp",
            ".y.png.5.tmp",
            "x.nii.gz",
            ".z.1a.tmp",
        ] {
            fs::write(dir.path().join(n), b"").unwrap();
        }
        let found = stale_temps(dir.path()).unwrap();
        let mut x: Vec<String> = found["x.nii.gz"]
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        x.sort();
        assert_eq!(x, vec![".x.nii.gz.123.tmp", ".x.nii.gz.9.tmp"]);
        assert_eq!(found["y.png"].len(), 1);
        assert_eq!(found.len(), 2, "{found:?}");
        // ".x.nii.gz.tmp" is read as name "x.nii" with pid "gz": not digits, ignored
    }

    #[test]
    fn a_file_in_the_way_makes_the_directory_unwritable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(ensure_writable_dir(&file.join("sub")).is_err());
        assert!(ensure_writable_dir(&dir.path().join("new/deeper")).is_ok());
    }
}
