//! The batch manifest: one JSON object per line per written volume (file, seed, model checksum,
//! sampler, steps, device, seconds). Each job of a job array appends to its own manifest file;
//! each line is one `write` to a file opened with O_APPEND, so runs that share a manifest never
//! interleave lines. A line torn by a kill is ignored when read and fenced off by a newline
//! before the next append. Readers keep one entry per file (the last line wins), and `Records`
//! follows every manifest of a folder as other runs append to them.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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

/// Whether `name` is a manifest file name (`manifest.jsonl`, `manifest.shard-I-of-N.jsonl`).
pub fn is_manifest_name(name: &str) -> bool {
    name.starts_with("manifest") && name.ends_with(".jsonl")
}

/// What every manifest of one output folder records, kept current as other runs append: known
/// files are read from where the last read stopped, and the folder is listed again on request.
pub struct Records {
    dir: PathBuf,
    /// Manifest path and how many bytes of it have been read (up to a complete line).
    read_to: HashMap<PathBuf, u64>,
    entries: HashMap<String, ManifestEntry>,
}

impl Records {
    /// Reads every manifest in `dir` (none when `dir` has none).
    pub fn load(dir: &Path) -> std::io::Result<Records> {
        let mut r = Records {
            dir: dir.to_path_buf(),
            read_to: HashMap::new(),
            entries: HashMap::new(),
        };
        r.refresh(true)?;
        Ok(r)
    }

    /// Reads what was appended since the last call; `rescan` also picks up manifests that
    /// appeared in the folder since.
    pub fn refresh(&mut self, rescan: bool) -> std::io::Result<()> {
        if rescan {
            for entry in std::fs::read_dir(&self.dir)? {
                let entry = entry?;
                if entry.file_name().to_str().is_some_and(is_manifest_name) {
                    self.read_to.entry(entry.path()).or_insert(0);
                }
            }
        }
        let paths: Vec<PathBuf> = self.read_to.keys().cloned().collect();
        for path in paths {
            self.read_tail(&path)?;
        }
        Ok(())
    }

    fn read_tail(&mut self, path: &Path) -> std::io::Result<()> {
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let mut from = self.read_to.get(path).copied().unwrap_or(0);
        if len < from {
            from = 0; // replaced or truncated by hand: read it again
        }
        if len == from {
            return Ok(());
        }
        f.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        f.take(len - from).read_to_end(&mut bytes)?;
        // Only complete lines: a line being appended right now is read next time.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in bytes[..complete].split(|&b| b == b'\n') {
            if let Ok(e) = serde_json::from_slice::<ManifestEntry>(line) {
                self.entries.insert(e.file.clone(), e);
            }
        }
        self.read_to
            .insert(path.to_path_buf(), from + complete as u64);
        Ok(())
    }

    /// The entry recorded for volume file `file`, in any manifest of the folder.
    pub fn get(&self, file: &str) -> Option<&ManifestEntry> {
        self.entries.get(file)
    }
}

/// Appends one entry as one line, in one `write` on an O_APPEND file (so that lines of runs
/// sharing the file never interleave), flushed to disk.
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
    let written = f.write(line.as_bytes())?;
    if written != line.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!(
                "only {written} of {} bytes of a manifest line were written",
                line.len()
            ),
        ));
    }
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
        assert!(Records::load(dir.path()).unwrap().get("a").is_none());
        append(&p, &entry("a", Some(1.5))).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"file\": \"b")
            .unwrap();
        append(&p, &entry("c", None)).unwrap();
        let got = Records::load(dir.path()).unwrap();
        assert_eq!(got.get("a"), Some(&entry("a", Some(1.5))));
        assert_eq!(got.get("c"), Some(&entry("c", None)));
        assert_eq!(got.entries.len(), 2);
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

    #[test]
    fn duplicates_are_read_once_and_records_follow_appends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(file_name(""));
        append(&p, &entry("a", Some(1.0))).unwrap();
        append(&p, &entry("b", None)).unwrap();
        append(&p, &entry("a", Some(2.0))).unwrap();
        let mut records = Records::load(dir.path()).unwrap();
        assert_eq!(records.entries.len(), 2);
        assert_eq!(records.get("a"), Some(&entry("a", Some(2.0))));
        assert!(records.get("c").is_none());
        append(&p, &entry("c", None)).unwrap();
        // a line being written (no newline yet) is not read until complete
        let shard = dir.path().join(file_name(".shard-0-of-2"));
        append(&shard, &entry("d", None)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"file\":")
            .unwrap();
        records.refresh(false).unwrap();
        assert!(records.get("c").is_some());
        assert!(records.get("d").is_none(), "a new manifest needs a rescan");
        records.refresh(true).unwrap();
        assert!(records.get("d").is_some());
        assert!(
            is_manifest_name("manifest.shard-0-of-2.jsonl") && !is_manifest_name("seed-0.nii.gz")
        );
    }
}
