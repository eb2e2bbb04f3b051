//! `.safetensors` checkpoints as plain bytes through `ldm_import::read_checkpoint` (content
//! detection, the safetensors header and offsets, the reader's own error description, element
//! decoding). Whatever it returns has one value per element of its shape, sorted by name.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        let path = ldm_fuzz::scratch::file("checkpoint.safetensors", data);
        if let Ok(tensors) = ldm_import::read_checkpoint(&path, None) {
            ldm_fuzz::check_tensors(&tensors);
            assert!(tensors.windows(2).all(|w| w[0].name <= w[1].name));
        }
    })
});
