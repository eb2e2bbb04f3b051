//! Test support for the `generate` and `bench` end-to-end tests: model blobs written from the
//! MONAI fixture checkpoints with the configuration their case.json files name (via
//! ldm-test-support), and running the CLI binary.
#![allow(dead_code)]

pub use ldm_test_support::fixture_config;
use ldm_weights::ModelConfig;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// tests/fixtures/monai
pub fn fixtures() -> PathBuf {
    ldm_test_support::fixtures_dir().join("monai")
}

/// Writes the fixture blob to `dir/fixture.blob` and returns its path.
pub fn fixture_blob(dir: &Path) -> PathBuf {
    fixture_blob_with(dir, "fixture.blob", fixture_config())
}

/// Writes the fixture networks' tensors with `cfg` (e.g. another output geometry) to `dir/name`.
pub fn fixture_blob_with(dir: &Path, name: &str, cfg: ModelConfig) -> PathBuf {
    let path = dir.join(name);
    ldm_test_support::write_fixture_blob(&path, &cfg);
    path
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_brats-ldm"));
    c.env_remove("BRATS_LDM_MODEL");
    c
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run with exactly one line on stderr containing every `needle` (the
/// informational "plan: ..." line printed before the runtime allocates does not count).
pub fn assert_one_line_error(o: &Output, needles: &[&str]) {
    let err: String = stderr(o)
        .lines()
        .filter(|l| !l.starts_with("plan: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line, got: {err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "'{n}' missing from: {err}");
    }
}
