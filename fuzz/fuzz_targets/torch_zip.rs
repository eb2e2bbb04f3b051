//! PyTorch `.pt` checkpoints as plain bytes through `ldm_import::read_checkpoint` (what
//! `convert` and the Python package's `convert` read checkpoints with): the zip container, the
//! restricted unpickler, the view checks and the element decoding. Whatever it returns has one
//! value per element of its shape. Seeds: the small `.pt` fixtures (scripts/fuzz-seeds.sh).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        let path = ldm_fuzz::scratch::file("checkpoint.pt", data);
        for key in [None, Some("state_dict")] {
            if let Ok(tensors) = ldm_import::read_checkpoint(&path, key) {
                ldm_fuzz::check_tensors(&tensors);
            }
        }
    })
});
