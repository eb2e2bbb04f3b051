//! The run folder's log: appending one JSON line per step to `log.jsonl`, cutting it back on
//! resume, and reading it; where a run's checkpoint is.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::record::{Stage, CHECKPOINT_FILE, LOG_FILE};
use super::TrainError;

/// `p` itself when it is a file, else `p/checkpoint.ckpt`.
pub fn checkpoint_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join(CHECKPOINT_FILE)
    } else {
        p.to_path_buf()
    }
}

pub(super) fn io_err(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Invalid(format!("{}: {e}", path.display()))
}

/// Cuts the log back to the lines with `step < keep_below` (atomic rewrite).
pub(super) fn trim_log(path: &Path, keep_below: u64) -> Result<(), TrainError> {
    let Ok(f) = File::open(path) else { return Ok(()) };
    let mut kept = String::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| io_err(path, e))?;
        let step = serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v.get("step").and_then(|s| s.as_u64()));
        if step.is_some_and(|s| s < keep_below) {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    ldm_io::atomic::write_bytes(path, kept.as_bytes()).map(|_| ()).map_err(|e| io_err(path, e))
}

/// Reads a run's log (skipping lines that are not JSON objects, e.g. a torn last line).
pub fn read_log(path: &Path) -> Result<Vec<serde_json::Value>, TrainError> {
    let f = File::open(path).map_err(|e| io_err(path, e))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| io_err(path, e))?;
        if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(&line) {
            out.push(v);
        }
    }
    Ok(out)
}

pub(super) fn open_log(out: &Path) -> Result<File, TrainError> {
    let p = out.join(LOG_FILE);
    OpenOptions::new().create(true).append(true).open(&p).map_err(|e| io_err(&p, e))
}

pub(super) fn log_line<T: Serialize>(log: &mut File, out: &Path, stage: Stage, rec: &T, elapsed: f64) -> Result<serde_json::Value, TrainError> {
    let mut v = serde_json::to_value(rec).map_err(|e| TrainError::Invalid(e.to_string()))?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("stage".into(), serde_json::json!(stage.name()));
        m.insert("elapsed_s".into(), serde_json::json!((elapsed * 1000.0).round() / 1000.0));
    }
    let mut s = v.to_string();
    s.push('\n');
    log.write_all(s.as_bytes()).map_err(|e| io_err(&out.join(LOG_FILE), e))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn trim_log_keeps_only_earlier_steps() {
        let dir = std::env::temp_dir().join(format!("ldm-trim-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join(LOG_FILE);
        fs::write(&p, "{\"step\":0}\n{\"step\":1}\n{\"step\":2}\n{\"step\":3,\"torn\n").unwrap();
        trim_log(&p, 2).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "{\"step\":0}\n{\"step\":1}\n");
        assert_eq!(read_log(&p).unwrap().len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}
