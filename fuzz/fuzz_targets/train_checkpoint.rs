//! Training checkpoints through `ldm_trainer::checkpoint::load` (what `train --resume` reads):
//! each input is tried as is and with its FNV-1a trailer recomputed, so mutations reach the
//! header-length checks, the JSON header and the section table. An accepted checkpoint saved
//! again by `checkpoint::save` loads back with an identical header and identical values.

#![no_main]

use ldm_trainer::checkpoint::{load, save};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        exercise(data);
        if let Some(sealed) = ldm_fuzz::build::seal_fnv(data) {
            exercise(&sealed);
        }
    })
});

fn exercise(bytes: &[u8]) {
    let path = ldm_fuzz::scratch::file("state.ckpt", bytes);
    let Ok((header, sections)) = load(&path) else {
        return;
    };
    assert_eq!(sections.len(), header.sections.len());
    for (s, info) in sections.iter().zip(&header.sections) {
        assert_eq!(s.len() as u64, info.len);
    }
    let again = ldm_fuzz::scratch::dir().join("again.ckpt");
    let views: Vec<&[f32]> = sections.iter().map(Vec::as_slice).collect();
    save(&again, &header, &views).expect("save takes what load gave");
    let (h2, s2) = load(&again).expect("a saved checkpoint loads");
    assert_eq!(h2, header);
    let bits = |s: &[Vec<f32>]| -> Vec<Vec<u32>> {
        s.iter()
            .map(|v| v.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits(&s2), bits(&sections));
}
