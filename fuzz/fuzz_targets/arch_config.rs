//! Architecture configs (`convert --config FILE`): `ldm_import::arch::Architecture::from_file`
//! on JSON text, then, for an accepted one, the blob config `convert` would build from it
//! (`convert::model_config`, which validates it) and that config's tensor list. Terminates, no
//! panic, no allocation past the bound.

#![no_main]

use std::path::PathBuf;

use ldm_import::arch::Architecture;
use ldm_import::convert::{model_config, ArchitectureSource, ConvertOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        let path = ldm_fuzz::scratch::file("config.json", data);
        let Ok(arch) = Architecture::from_file(&path) else {
            return;
        };
        let opts = ConvertOptions {
            autoencoder: arch.decoder.as_ref().map(|_| PathBuf::from("ae.pt")),
            unet: arch.unet.as_ref().map(|_| PathBuf::from("unet.pt")),
            architecture: ArchitectureSource::ConfigFile(path.clone()),
            ..ConvertOptions::default()
        };
        if let Ok(cfg) = model_config(&opts, &arch) {
            let tensors = ldm_weights::expected_tensors(&cfg);
            assert!(!tensors.is_empty());
        }
    })
});
