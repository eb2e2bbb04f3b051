//! Replays the fuzzers' findings for the NIfTI reader (`fuzz/regressions/nifti`) through
//! `read_volume_within`, the entry point the `nifti` target, `prepare` and the trainer's data
//! pipeline use: each must now end in the error listed for it here. A file added to that folder
//! without an entry in `EXPECTED` fails the test.

use std::path::{Path, PathBuf};

use ldm_io::nifti::read_volume_within;
use ldm_io::Budget;

/// (file name, text the error must contain).
const EXPECTED: &[(&str, &str)] = &[
    (
        // INT64 voxels times a scl_slope of -2.5e38: finite as f64, infinite as float32.
        "int64-scaled-past-float32.nii",
        "voxel(s) are NaN or infinite as float32, after scl_slope/scl_inter",
    ),
    (
        // The same through gzip and big-endian INT8 (the nifti_header target's finding).
        "int8-big-endian-gz-scaled-past-float32.nii",
        "voxel(s) are NaN or infinite as float32, after scl_slope/scl_inter",
    ),
];

fn regressions() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/nifti");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_nifti_finding_ends_in_its_clean_error() {
    let mut seen = 0;
    for path in regressions() {
        let name = path.file_name().unwrap().to_str().unwrap();
        let want = EXPECTED
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("nifti/{name} has no expected error in EXPECTED"))
            .1;
        let e = read_volume_within(&path, None, Budget::new(64 << 20))
            .map(|image| image.data.len())
            .expect_err(&format!("nifti/{name} is accepted"))
            .to_string();
        assert!(e.contains(want), "nifti/{name}: {e}");
        seen += 1;
    }
    assert_eq!(seen, EXPECTED.len(), "a listed regression file is missing");
}
