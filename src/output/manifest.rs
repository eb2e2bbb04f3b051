//! The batch manifest: one JSON object per line per written volume (file, seed, model checksum,
//! sampler, steps, device, seconds). Each job of a job array appends to its own manifest file,
//! so concurrent jobs never interleave lines; a line torn by a kill is ignored when read and
//! fenced off by a newline before the next append.

use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// File name relative to the output directory.
    pub file: String,
    /// Seed of the initial noise; absent when the run started from `--init-noise`.
    pub seed: Option<u64>,
    /// The `--init-noise` file, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_noise: Option<String>,
    /// The model blob's checksum (hex).
    pub model_checksum: String,
    /// "ddim" or "ddpm".
    pub sampler: String,
    /// DDIM eta (absent for DDPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<f32>,
    pub steps: usize,
    /// "cpu" or "cuda:N".
    pub device: String,
    /// Wall time to generate and write the volume; null when an earlier, interrupted run wrote
    /// the file and this run only recorded it.
    pub seconds: Option<f64>,
}

/// File name of the manifest for one job (`manifest.jsonl`, or `manifest.shard-I-of-N.jsonl`).
pub fn file_name(shard_tag: &str) -> String {
    format!("manifest{shard_tag}.jsonl")
}

/// Entries of an existing manifest (missing file: none). Unparseable lines are skipped: they can
/// only be a last line torn by a killed job.
pub fn read(path: &Path) -> std::io::Result<Vec<ManifestEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Appends one entry as one line, flushed to disk.
pub fn append(path: &Path, entry: &ManifestEntry) -> std::io::Result<()> {
    let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len > 0 {
        // Fence off a torn last line so that ours stays parseable.
        f.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, '\n');
        }
    }
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str, seconds: Option<f64>) -> ManifestEntry {
        ManifestEntry {
            file: file.into(),
            seed: Some(7),
            init_noise: None,
            model_checksum: "00ff".into(),
            sampler: "ddim".into(),
            eta: Some(0.0),
            steps: 50,
            device: "cpu".into(),
            seconds,
        }
    }

    #[test]
    fn append_and_read_survive_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(file_name(""));
        assert!(read(&p).unwrap().is_empty());
        append(&p, &entry("a", Some(1.5))).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"file\": \"b")
            .unwrap();
        append(&p, &entry("c", None)).unwrap();
        let got = read(&p).unwrap();
        assert_eq!(got, vec![entry("a", Some(1.5)), entry("c", None)]);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 3);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for key in [
            "file",
            "seed",
            "model_checksum",
            "sampler",
            "steps",
            "device",
            "seconds",
        ] {
            assert!(first.get(key).is_some(), "{key} missing in {first}");
        }
        assert_eq!(file_name(".shard-1-of-4"), "manifest.shard-1-of-4.jsonl");
    }
}
