//! Checkpoint inputs that are not regular files: a FIFO is refused at once (it would block
//! forever), /dev/zero ends with a format error.

use std::path::Path;
use std::time::{Duration, Instant};

use ldm_import::read_checkpoint;

#[test]
fn a_fifo_checkpoint_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.pt");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.map(|s| s.success()).unwrap_or(false) {
        eprintln!("skipped: mkfifo unavailable");
        return;
    }
    let start = Instant::now();
    let e = read_checkpoint(&fifo, None).unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let e = ldm_import::safetensors_file::read(&fifo, None).unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");
}

#[test]
fn dev_zero_is_not_a_checkpoint() {
    let zero = Path::new("/dev/zero");
    if !zero.exists() {
        return;
    }
    let e = read_checkpoint(zero, None).unwrap_err().to_string();
    assert!(e.contains("neither a torch.save zip archive nor a safetensors file"), "{e}");
}
