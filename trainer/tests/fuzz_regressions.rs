//! Replays the fuzzers' findings for the trainer's readers (`fuzz/regressions/train_checkpoint`,
//! `train_config`) through the entry points `train` uses: a checkpoint reads back exactly as it
//! was saved, and a training configuration that could not be saved for `--resume` is refused
//! with the place of the offending number.

use std::path::{Path, PathBuf};

use ldm_trainer::checkpoint::{load, save};
use ldm_trainer::train::setup::TrainConfig;

fn regressions(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no regression inputs for {target}");
    files
}

/// `float-1e-28.ckpt`: a header number (1e-28) that the JSON parser read one unit in the last
/// place off, so that save -> load changed the header.
#[test]
fn checkpoints_from_the_fuzzer_survive_save_and_load() {
    let dir = tempfile_dir();
    for path in regressions("train_checkpoint") {
        let (header, sections) = load(&path).unwrap();
        let again = dir.join("again.ckpt");
        let views: Vec<&[f32]> = sections.iter().map(Vec::as_slice).collect();
        save(&again, &header, &views).unwrap();
        let (header2, sections2) = load(&again).unwrap();
        assert_eq!(header2, header, "{}", path.display());
        assert_eq!(sections2, sections);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// `adam-eps-1e48.json`: a float too large for its 32-bit field was accepted as infinity, and
/// the saved `config.json` (infinity written as null) could not be read by `--resume`. With the
/// exact float parser such a number is refused where it stands.
#[test]
fn configurations_from_the_fuzzer_are_refused_where_the_number_stands() {
    for path in regressions("train_config") {
        let text = std::fs::read_to_string(&path).unwrap();
        let e = TrainConfig::from_json(&text, "config.json").unwrap_err().to_string();
        assert!(e.contains("number out of range at line 137 column 18"), "{}: {e}", path.display());
    }
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ldm-trainer-fuzz-regressions-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
