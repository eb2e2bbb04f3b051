//! MONAI bundle configs (`convert --bundle DIR`, `convert --config` with a MONAI config): the
//! input is `configs/inference.json` of a scratch bundle, or, when it holds a NUL byte,
//! `configs/train_autoencoder.json` (before the NUL) merged under `configs/inference.json` (after
//! it). Runs `ldm_import::bundle::read_bundle_dir` (merge, `%` macros, `@` references, `$`
//! expressions, the architecture and checkpoint names), then resolves every top-level id of the
//! merged config. Properties: resolution terminates; resolving an id twice gives the same result
//! (the cache changes nothing); an id whose value is a reference to itself (by the resolver's
//! own rule of what a reference is, `whole_reference`) is an error.

#![no_main]

use ldm_import::bundle::read_bundle_dir;
use ldm_import::bundle_config::{normalize_id, whole_reference, BundleConfig};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Top-level ids resolved per input (each resolution is bounded by the resolver's own limits).
const MAX_IDS: usize = 64;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        let dir = ldm_fuzz::scratch::fresh_dir("bundle");
        let configs = dir.join("configs");
        std::fs::create_dir_all(&configs).expect("scratch configs folder");
        let mut files = Vec::new();
        let inference = match data.iter().position(|&b| b == 0) {
            Some(nul) => {
                let train = configs.join("train_autoencoder.json");
                std::fs::write(&train, &data[..nul]).expect("scratch config");
                files.push(train);
                &data[nul + 1..]
            }
            None => data,
        };
        let path = configs.join("inference.json");
        std::fs::write(&path, inference).expect("scratch config");
        files.push(path);

        let _ = read_bundle_dir(&dir, false);

        let Ok(mut cfg) = BundleConfig::load(&files, &dir) else {
            return;
        };
        for id in cfg.keys().into_iter().take(MAX_IDS) {
            let self_reference = match cfg.raw(&id) {
                Some(Value::String(s)) => whole_reference(s) == Some(normalize_id(&id)),
                _ => false,
            };
            let first = cfg.resolve(&id);
            let again = cfg.resolve(&id);
            match (&first, &again) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "`{id}` resolved twice differs"),
                (Err(_), Err(_)) => {}
                _ => panic!("`{id}` resolved twice: {first:?} then {again:?}"),
            }
            if self_reference {
                assert!(first.is_err(), "`{id}` refers to itself but resolved to {first:?}");
            }
        }
    })
});
