//! The batch job's manifest (`generate`'s `manifest*.jsonl`, read back to skip finished volumes
//! on a rerun): `Records::load` on a folder whose manifest holds the input. Every complete line
//! that parses as an entry on its own is what `get` returns for its file (the last line wins;
//! torn and foreign lines are skipped), and an entry appended after any content (a torn last
//! line included) is read back by `refresh`, with every earlier entry unchanged.
//!
//! The manifest code is the CLI's own `src/output/manifest.rs`, compiled into this target as a
//! module (the binary crate has no library to link); nothing is copied.

#![no_main]

#[path = "../../src/output/manifest.rs"]
#[allow(dead_code)]
mod manifest;

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use manifest::{append, file_name, ManifestEntry, Records};

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        let dir = ldm_fuzz::scratch::fresh_dir("out");
        let path = dir.join(file_name(""));
        std::fs::write(&path, data).expect("scratch manifest");
        let mut records = Records::load(&dir).expect("a readable folder loads");
        let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut want: HashMap<String, ManifestEntry> = HashMap::new();
        for line in data[..complete].split(|&b| b == b'\n') {
            if let Ok(e) = serde_json::from_slice::<ManifestEntry>(line) {
                want.insert(e.file.clone(), e);
            }
        }
        for (file, e) in &want {
            assert_eq!(records.get(file), Some(e), "{file}");
        }
        let new = ManifestEntry {
            file: "fuzz-appended.nii.gz".into(),
            seed: Some(data.len() as u64),
            init_noise: None,
            model_checksum: "00ff".into(),
            sampler: "ddim".into(),
            eta: Some(0.5),
            steps: 50,
            device: "cpu".into(),
            seconds: Some(1.25),
        };
        append(&path, &new).expect("append to a scratch manifest");
        // The append fences a last line without a newline off with one: from then on it is a
        // complete line, read like any other.
        if let Ok(e) = serde_json::from_slice::<ManifestEntry>(&data[complete..]) {
            want.insert(e.file.clone(), e);
        }
        records.refresh(false).expect("refresh");
        assert_eq!(records.get(&new.file), Some(&new));
        for (file, e) in want.iter().filter(|(f, _)| *f != &new.file) {
            assert_eq!(records.get(file), Some(e), "{file} after the append");
        }
    })
});
