//! Replays the fuzzers' findings for the checkpoint readers (`fuzz/regressions/torch_zip`,
//! `torch_pickle`, `safetensors`) through `read_checkpoint`, the entry point the fuzz targets
//! and `convert` use, and for the bundle config resolver (`fuzz/regressions/bundle_config`)
//! through `BundleConfig::load` and `resolve`, as the `bundle_config` target does: each must now
//! end in the clean, one-line error listed for it here. A file added to those folders without an
//! entry in `EXPECTED` fails the test.

use std::path::{Path, PathBuf};

use ldm_import::bundle_config::BundleConfig;
use ldm_import::read_checkpoint;

/// (target folder, file name, text the error must contain).
const EXPECTED: &[(&str, &str, &str)] = &[
    (
        "torch_zip",
        "shared-storage-amplification.pt",
        "too many tensors share the same storages",
    ),
    (
        "bundle_config",
        "macro-fanout.json",
        "copy more than 64 MiB of values",
    ),
    (
        "bundle_config",
        "reference-fanout.json",
        "copy more than 64 MiB of values",
    ),
    (
        "bundle_config",
        "repetition.json",
        "a repetition larger than 16 MiB",
    ),
];

fn expected(target: &str, path: &Path) -> &'static str {
    let name = path.file_name().unwrap().to_str().unwrap();
    EXPECTED
        .iter()
        .find(|(t, n, _)| *t == target && *n == name)
        .unwrap_or_else(|| panic!("{target}/{name} has no expected error in EXPECTED"))
        .2
}

fn regressions(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn every_checkpoint_finding_ends_in_its_clean_error() {
    let mut seen = 0;
    for target in ["torch_zip", "torch_pickle", "safetensors"] {
        for path in regressions(target) {
            let name = path.file_name().unwrap().to_str().unwrap();
            let want = expected(target, &path);
            let e = read_checkpoint(&path, None)
                .map(|t| t.len())
                .expect_err(&format!("{target}/{name} is accepted"))
                .to_string();
            assert!(e.contains(want), "{target}/{name}: {e}");
            assert!(!e.contains('\n'), "{target}/{name}: not one line: {e}");
            seen += 1;
        }
    }
    let checkpoints = EXPECTED.iter().filter(|e| e.0 != "bundle_config").count();
    assert_eq!(seen, checkpoints, "a listed regression file is missing");
}

/// Each config is one bundle's `inference.json`; loading it or resolving any top-level id must
/// fail with the listed error (and stay within the copy limit while doing so).
#[test]
fn every_bundle_config_finding_ends_in_its_clean_error() {
    let mut seen = 0;
    for path in regressions("bundle_config") {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let want = expected("bundle_config", &path);
        let base = path.parent().unwrap();
        let e = match BundleConfig::load(std::slice::from_ref(&path), base) {
            Err(e) => e,
            Ok(mut cfg) => cfg
                .keys()
                .iter()
                .find_map(|id| cfg.resolve(id).err())
                .unwrap_or_else(|| panic!("bundle_config/{name}: every id resolves")),
        }
        .to_string();
        assert!(e.contains(want), "bundle_config/{name}: {e}");
        assert!(!e.contains('\n'), "bundle_config/{name}: not one line: {e}");
        seen += 1;
    }
    let listed = EXPECTED.iter().filter(|e| e.0 == "bundle_config").count();
    assert_eq!(seen, listed, "a listed regression file is missing");
}
