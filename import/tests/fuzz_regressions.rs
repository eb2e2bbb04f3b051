//! Replays the fuzzers' findings for the checkpoint readers (`fuzz/regressions/torch_zip`,
//! `torch_pickle`, `safetensors`) through `read_checkpoint`, the entry point the fuzz targets
//! and `convert` use: each must now end in the clean, one-line error listed for it here. A file
//! added to those folders without an entry in `EXPECTED` fails the test.

use std::path::{Path, PathBuf};

use ldm_import::read_checkpoint;

/// (target folder, file name, text the error must contain).
const EXPECTED: &[(&str, &str, &str)] = &[(
    "torch_zip",
    "shared-storage-amplification.pt",
    "too many tensors share the same storages",
)];

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
            let want = EXPECTED
                .iter()
                .find(|(t, n, _)| *t == target && *n == name)
                .unwrap_or_else(|| panic!("{target}/{name} has no expected error in EXPECTED"))
                .2;
            let e = read_checkpoint(&path, None)
                .map(|t| t.len())
                .expect_err(&format!("{target}/{name} is accepted"))
                .to_string();
            assert!(e.contains(want), "{target}/{name}: {e}");
            assert!(!e.contains('\n'), "{target}/{name}: not one line: {e}");
            seen += 1;
        }
    }
    assert_eq!(seen, EXPECTED.len(), "a listed regression file is missing");
}
