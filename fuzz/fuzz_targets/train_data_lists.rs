//! The trainer's data lists: a dataset's `dataset.json` (`train --data DIR`, the Decathlon
//! layout) through `ldm_trainer::data::dataset::discover`, and a recorded train/validation split
//! (`split.json`, read back by `--resume`) through `Split::load`. The first input byte picks the
//! file (even: dataset.json, odd: split), the rest is its text. Every path `discover` returns
//! stays inside the dataset folder; an accepted split saved by `Split::save` loads back equal.

#![no_main]

use ldm_trainer::data::dataset::{discover, Split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        let Some((&pick, text)) = data.split_first() else {
            return;
        };
        if pick % 2 == 0 {
            dataset_json(text);
        } else {
            split_json(text);
        }
    })
});

fn dataset_json(text: &[u8]) {
    let dir = ldm_fuzz::scratch::fresh_dir("dataset");
    std::fs::create_dir_all(dir.join("imagesTr")).expect("scratch");
    std::fs::write(dir.join("imagesTr/BRATS_001.nii.gz"), b"").expect("scratch");
    std::fs::write(dir.join("dataset.json"), text).expect("scratch");
    for allow_missing in [false, true] {
        if let Ok(ds) = discover(&dir, allow_missing) {
            assert!(!ds.images.is_empty());
            for p in ds.images.iter().chain(&ds.missing) {
                assert!(
                    p.starts_with(&dir),
                    "{} leaves the dataset folder",
                    p.display()
                );
            }
            if !allow_missing {
                assert!(ds.missing.is_empty());
            }
        }
    }
}

fn split_json(text: &[u8]) {
    let path = ldm_fuzz::scratch::file("split.json", text);
    let Ok(split) = Split::load(&path) else {
        return;
    };
    let again = ldm_fuzz::scratch::dir().join("split-again.json");
    split.save(&again).expect("a loaded split saves");
    assert_eq!(Split::load(&again).expect("a saved split loads"), split);
}
