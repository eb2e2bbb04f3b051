//! Opening input files safely: regular files and character devices only (a FIFO or socket is
//! refused before it is opened, so it never blocks; a directory is refused with a clear error),
//! with the real length known for regular files, and reads that never take more than a cap.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::budget::Budget;

/// An opened input: the file and, for a regular file, its length.
#[derive(Debug)]
pub struct Input {
    pub file: File,
    /// `Some(bytes)` for a regular file; `None` for a device, whose length is unknown.
    pub len: Option<u64>,
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidInput, msg)
}

impl Input {
    /// Opens `path` for reading. FIFOs, sockets and directories are refused by their type
    /// (checked with `stat` before opening, so a FIFO without a writer cannot block us).
    pub fn open(path: &Path) -> std::io::Result<Input> {
        let kind = std::fs::metadata(path)?.file_type();
        if kind.is_fifo() {
            return Err(invalid(
                "is a FIFO (named pipe), not a regular file: refusing to read it".into(),
            ));
        }
        if kind.is_socket() {
            return Err(invalid(
                "is a socket, not a regular file: refusing to read it".into(),
            ));
        }
        if kind.is_dir() {
            return Err(invalid("is a directory, not a file".into()));
        }
        let file = File::open(path)?;
        // The opened file's own type: the path may have been replaced since the stat.
        let meta = file.metadata()?;
        if meta.file_type().is_fifo() || meta.file_type().is_socket() {
            return Err(invalid("is not a regular file: refusing to read it".into()));
        }
        let len = meta.is_file().then_some(meta.len());
        Ok(Input { file, len })
    }
}

/// Reads up to `buf.len()` bytes, fewer only at end of file; returns how many.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Whether `r` is at its end (reads at most one byte to find out).
pub fn at_end(r: &mut dyn Read) -> std::io::Result<bool> {
    let mut one = [0u8; 1];
    Ok(read_full(r, &mut one)? == 0)
}

/// Reads the rest of `input` after the `head` bytes already read from it, into one buffer that
/// starts with `head`. A regular file must fit `budget` before anything is allocated; a device
/// is read in steps and refused as soon as it passes the budget.
pub fn read_rest(
    input: &mut Input,
    head: Vec<u8>,
    budget: Budget,
    what: &str,
) -> std::io::Result<Vec<u8>> {
    if let Some(len) = input.len {
        budget.check(len as u128, what)?;
        let want = usize::try_from(len)
            .map_err(|_| invalid(format!("{what}: {len} bytes do not fit in memory")))?;
        let mut bytes = head;
        bytes.reserve_exact(want.saturating_sub(bytes.len()));
        // +1: a file that grew while we read it is noticed instead of being cut.
        (&mut input.file)
            .take((want - bytes.len().min(want)) as u64 + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() != want {
            return Err(invalid(format!(
                "changed size while being read ({len} bytes when opened, {} read)",
                bytes.len()
            )));
        }
        return Ok(bytes);
    }
    let mut bytes = head;
    let cap = budget.limit();
    (&mut input.file)
        .take(cap.saturating_sub(bytes.len() as u64).saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(invalid(format!(
            "{what}: not a regular file and longer than the memory limit of {cap} bytes ({}): refusing to read further",
            crate::budget::gib(cap as u128)
        )));
    }
    Ok(bytes)
}

/// The whole of `path` in memory, within `budget` (see `read_rest`).
pub fn read_all(path: &Path, budget: Budget) -> std::io::Result<Vec<u8>> {
    let mut input = Input::open(path)?;
    read_rest(&mut input, Vec::new(), budget, "the file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_is_refused_without_blocking_and_devices_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.map(|s| s.success()).unwrap_or(false) {
            let e = Input::open(&fifo).unwrap_err();
            assert!(e.to_string().contains("FIFO"), "{e}");
        }
        let e = read_all(Path::new("/dev/zero"), Budget::new(1 << 20)).unwrap_err();
        assert!(e.to_string().contains("memory limit of 1048576"), "{e}");
        let e = Input::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }

    #[test]
    fn regular_files_are_checked_against_the_budget_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![7u8; 1000]).unwrap();
        assert_eq!(read_all(&p, Budget::new(1000)).unwrap().len(), 1000);
        let e = read_all(&p, Budget::new(999)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfMemory);
        assert!(e.to_string().contains("needs 1000 bytes"), "{e}");
    }
}
